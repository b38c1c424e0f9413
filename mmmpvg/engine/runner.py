"""What tools/train.py and tools/test.py share: CLI overrides, the Runner."""
import glob
import os
import os.path as osp
import re

from mmengine.optim import OptimWrapperDict
from mmengine.registry import RUNNERS
from mmengine.runner import BaseLoop, Runner
from mmengine.runner.checkpoint import find_latest_checkpoint

from .checkpoint_compat import CheckpointCompatibilityHook
from .checkpoint_loading import checkpoint_damage
from .distributed import setup_cpu_distributed


def apply_common_args(cfg, args):
    """Apply ``--launcher``, ``--cfg-options`` and ``--work-dir`` to ``cfg``.

    The command line beats the config; without either, the work dir is
    ``./work_dirs/<config name>`` as in OpenMMLab's tools.
    """
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def _saved_checkpoints(work_dir: str):
    """``epoch_N.pth`` / ``iter_N.pth`` in ``work_dir``, newest first."""

    def progress(path):
        return int(re.search(r'_(\d+)\.pth$', path).group(1))

    found = [p for p in glob.glob(osp.join(work_dir, '*.pth'))
             if re.search(r'(^|/)(epoch|iter)_\d+\.pth$', p)]
    return sorted(found, key=progress, reverse=True)


def resolve_resume(cfg):
    """Point ``--resume`` at a complete checkpoint, never a broken one.

    With a named checkpoint, a damaged file is an error. Without one, the
    latest checkpoint is used if complete; else the newest complete earlier
    one, with a warning. If every checkpoint is damaged the run stops rather
    than silently restarting from scratch.

    Returns:
        str | None: A warning to log when damaged checkpoints were skipped.
    """
    if not cfg.get('resume'):
        return None
    if cfg.get('load_from'):
        damage = checkpoint_damage(cfg.load_from)
        if damage:
            raise RuntimeError(
                f'Cannot resume from {cfg.load_from}: {damage}.')
        return None
    latest = find_latest_checkpoint(cfg.work_dir)
    candidates = ([latest] if latest else []) + [
        p for p in _saved_checkpoints(cfg.work_dir) if p != latest]
    if not candidates:
        return None  # a first launch: nothing to resume yet
    damaged = []
    for path in candidates:
        damage = checkpoint_damage(path)
        if damage is None:
            cfg.load_from = path
            if damaged:
                return (
                    'Skipping damaged checkpoint(s) ' + '; '.join(
                        f'{p} ({d})' for p, d in damaged) +
                    f'; resuming from {path}, the newest complete one.')
            return None
        damaged.append((path, damage))
    raise RuntimeError(
        f'--resume: no complete checkpoint in {cfg.work_dir}: ' + '; '.join(
            f'{p} ({d})' for p, d in damaged) + '. Refusing to restart from '
        'scratch; delete them (or drop --resume) to start a new run.')


def _data_roots(cfg, path):
    """(config path, data_root) of a dataset config and nested ones."""
    if isinstance(cfg, dict):
        if cfg.get('data_root'):
            yield path + '.data_root', cfg['data_root']
        for key, value in cfg.items():
            if key in ('dataset', 'datasets'):
                yield from _data_roots(value, f'{path}.{key}')
    elif isinstance(cfg, (list, tuple)):
        for i, value in enumerate(cfg):
            yield from _data_roots(value, f'{path}[{i}]')


@RUNNERS.register_module()
class CheckedRunner(Runner):
    """MMEngine's Runner, with one clear error for a data set that is
    missing or empty instead of a traceback from deep inside its loading,
    and ``compile`` applied to every step.

    MMEngine compiles only ``train_step``: it left ``val_step`` and
    ``test_step`` out for a PyTorch 2.0 mkldnn bug (pytorch#96406). With the
    torch this project needs, compiled (inductor) validation and test steps
    give the eager results, so they are compiled here too.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._compiled_steps = set()

    def train(self):
        self._maybe_compile('val_step')
        return super().train()

    def val(self):
        self._maybe_compile('val_step')
        return super().val()

    def test(self):
        self._maybe_compile('test_step')
        return super().test()

    def _maybe_compile(self, target: str) -> None:
        # Once per step, however often train/val/test run.
        if target not in self._compiled_steps:
            self._compiled_steps.add(target)
            super()._maybe_compile(target)

    def build_optim_wrapper(self, optim_wrapper):
        """As MMEngine's, with plain dicts as param groups.

        The optimizer constructors that apply a ``paramwise_cfg`` hand the
        optimizer ConfigDicts, which ``torch.compile`` cannot trace through
        ``optimizer.step()`` (a compiled ``train_step`` contains it). A
        resumed run has plain dicts already: ``load_state_dict`` makes them.
        """
        optim_wrapper = super().build_optim_wrapper(optim_wrapper)
        wrappers = (optim_wrapper.values() if isinstance(
            optim_wrapper, OptimWrapperDict) else [optim_wrapper])
        for wrapper in wrappers:
            groups = wrapper.optimizer.param_groups
            groups[:] = [dict(group) for group in groups]
        return optim_wrapper

    def _build_param_scheduler(self, scheduler, optim_wrapper):
        """As MMEngine's, without the phases that would begin when training
        is over.

        A scheduler without ``end`` ends with training; MMEngine then
        refuses one that begins at or after that point ("end should be
        larger than begin"), so a warm-up-then-cosine recipe would fail
        whenever ``max_epochs`` is cut to the warm-up or less. Such a
        phase would never run: it is left out, with a warning.
        """
        schedulers = scheduler if isinstance(scheduler, (list, tuple)) \
            else [scheduler]
        kept = []
        for item in schedulers:
            if isinstance(item, dict) and 'end' not in item and \
                    isinstance(self._train_loop, BaseLoop):
                by_epoch = item.get('by_epoch', True)
                length = self.max_epochs if by_epoch else self.max_iters
                if item.get('begin', 0) >= length:
                    self.logger.warning(
                        f'{item["type"]} begins at '
                        f'{"epoch" if by_epoch else "iteration"} '
                        f'{item["begin"]}, when training ({length}) is over: '
                        'it is left out.')
                    continue
            kept.append(item)
        return super()._build_param_scheduler(kept, optim_wrapper)

    @staticmethod
    def build_dataloader(dataloader, seed=None, diff_rank_seed=False):
        if not isinstance(dataloader, dict):
            return Runner.build_dataloader(dataloader, seed, diff_rank_seed)
        dataset = dataloader.get('dataset', {})
        for where, root in _data_roots(dataset, 'dataset'):
            if '://' in str(root):
                continue
            if not osp.isdir(root):
                raise FileNotFoundError(
                    f'{where} {root!r} does not exist: point it at the data '
                    f'set (--cfg-options ..._dataloader.{where}=PATH).')
            if not os.listdir(root):
                raise FileNotFoundError(
                    f'{where} {root!r} is an empty folder: put the data set '
                    f'there in the layout the config reads, or point '
                    f'{where} elsewhere; to try the config without the '
                    f'data, see tools/make_smoke_data.py and --smoke.')
        described = f"data set {dataset.get('type', '?')}" + (
            f" at {dataset['data_root']!r}" if dataset.get('data_root')
            else '')
        try:
            loader = Runner.build_dataloader(dataloader, seed, diff_rank_seed)
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f'The {described} lacks a file its config names: {error}. '
                'Check its layout against the config (data_root, ann_file, '
                'data_prefix).') from error
        except ValueError as error:
            # mmengine's BaseDataset serialises its data list with
            # np.concatenate, which fails this way on an empty list.
            if 'need at least one array to concatenate' not in str(error):
                raise
            loader = None
        if loader is None or len(loader.dataset) == 0:
            raise ValueError(
                f'The {described} is empty: no samples after loading its '
                'annotations (check ann_file, data_prefix and filter_cfg).')
        return loader


def build_runner(cfg, require_all_weights: bool = False):
    """The config's Runner, with the CPU-distributed set-up done first and
    checkpoints checked against the model before they load.

    Args:
        require_all_weights (bool): The checkpoint must provide every model
            weight (testing); otherwise weights it lacks keep their
            initialisation (training from ``load_from``).
    """
    skipped_damaged = resolve_resume(cfg)
    setup_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = CheckedRunner.from_cfg(cfg)
    runner.register_hook(CheckpointCompatibilityHook(require_all_weights))
    if skipped_damaged:
        runner.logger.warning(skipped_damaged)
    return runner
