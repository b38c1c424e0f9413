"""Runner checkpoints on torch >= 2.6: resume, load_from and test read them,
foreign pickled objects are refused, a crash while saving keeps the last
complete checkpoint; same seed, same loss curve; bf16 autocast on CPU with
--amp. Runs are in-process through tools/train.py and tools/test.py."""
import math
import pickle

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer

from mmmpvg.engine import UnsafeCheckpointError, mmengine_checkpoint_globals

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures('one_thread', 'restore_determinism')
]

NO_AUGMENTATION = """\
_base_ = {base!r}
# No random augmentation: RNG state is not part of a checkpoint, so only
# then is a resumed run bit-identical to an uninterrupted one.
train_dataloader = dict(dataset=dict(pipeline=[dict(type='PackInputs')]))
"""


@pytest.fixture(scope='module')
def train(train_tool, make_runner):
    """``train(config, work_dir, options, *args, hooks=())``: a finished
    run of tools/train.py."""

    def run(config, work_dir, options, *args, hooks=()):
        runner = make_runner(train_tool, config, work_dir, options, *args)
        for hook in hooks:
            runner.register_hook(hook)
        runner.train()
        return runner

    return run


def history(runner, key):
    return runner.message_hub.get_scalar(key).data[0].tolist()


def log_text(runner):
    with open(f'{runner.log_dir}/{runner.timestamp}.log') as f:
        return f.read()


def state_dicts_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope='module')
def no_aug_config(tmp_path_factory, demo_config):
    path = tmp_path_factory.mktemp('configs') / 'digits_no_aug.py'
    path.write_text(NO_AUGMENTATION.format(base=str(demo_config)))
    return path


@pytest.fixture(scope='module')
def reference_run(one_thread, train, no_aug_config, tiny_digits_options,
                  tmp_path_factory):
    """Three uninterrupted epochs (4 iterations each), a checkpoint after
    each, validation after the last."""
    options = (*tiny_digits_options,
               'default_hooks.checkpoint.max_keep_ckpts=-1')  # keep all
    runner = train(no_aug_config, tmp_path_factory.mktemp('reference'),
                   options)
    torch.use_deterministic_algorithms(False)
    return runner


def test_resume_continues_exactly_where_the_checkpoint_left_off(
        train, no_aug_config, tiny_digits_options, reference_run, tmp_path):
    checkpoint = f'{reference_run.work_dir}/epoch_1.pth'

    resumed = train(no_aug_config, tmp_path, tiny_digits_options,
                    '--resume', checkpoint)

    assert 'resumed epoch: 1, iter: 4' in log_text(resumed)
    assert resumed.iter == reference_run.iter == 12
    # The message hub comes back too: iterations 1-4 from the checkpoint.
    assert history(resumed, 'train/lr') == history(reference_run, 'train/lr')
    assert history(resumed, 'train/loss') == history(reference_run,
                                                     'train/loss')
    # AdamW's moments and step count continued rather than restarted.
    optimizer_state = resumed.optim_wrapper.optimizer.state_dict()['state']
    assert all(s['step'] == 12 for s in optimizer_state.values())
    assert state_dicts_equal(resumed.model.state_dict(),
                             reference_run.model.state_dict())


def test_test_tool_loads_the_checkpoint(make_runner, test_tool,
                                        no_aug_config, tiny_digits_options,
                                        reference_run, tmp_path):
    checkpoint = f'{reference_run.work_dir}/epoch_3.pth'
    runner = make_runner(test_tool, no_aug_config, tmp_path,
                         tiny_digits_options, checkpoint)

    metrics = runner.test()

    assert state_dicts_equal(runner.model.state_dict(),
                             reference_run.model.state_dict())
    # Same weights, same (test = val) split: the reference's last validation.
    val_top1 = reference_run.message_hub.get_scalar('val/accuracy/top1')
    assert metrics['accuracy/top1'] == val_top1.current()


def test_allow_list_is_active_only_inside_mmengine_loaders(reference_run):
    checkpoint = f'{reference_run.work_dir}/epoch_3.pth'
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(checkpoint)
    with mmengine_checkpoint_globals():
        loaded = torch.load(checkpoint)
    assert isinstance(loaded['message_hub']['log_scalars']['train/loss'],
                      HistoryBuffer)


class ForeignPayload:
    """Any class outside the allow-list (defined in this test module)."""


class HistoryBufferInit:
    """Pickles as getattr(HistoryBuffer, '__init__'): reaching beyond the
    statistics methods a HistoryBuffer pickles."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


@pytest.mark.parametrize('payload, named', [
    (ForeignPayload(), f'{__name__}.ForeignPayload'),
    (HistoryBufferInit(), "'__init__'"),
])
def test_checkpoint_with_a_foreign_object_is_refused(
        payload, named, make_runner, test_tool, no_aug_config,
        tiny_digits_options, reference_run, tmp_path):
    with mmengine_checkpoint_globals():
        checkpoint = torch.load(f'{reference_run.work_dir}/epoch_3.pth')
    checkpoint['meta']['payload'] = payload
    tampered = tmp_path / 'tampered.pth'
    torch.save(checkpoint, tampered)
    runner = make_runner(test_tool, no_aug_config, tmp_path / 'test',
                         tiny_digits_options, tampered)

    with pytest.raises(UnsafeCheckpointError) as refusal:
        runner.test()

    assert named in str(refusal.value)
    assert str(tampered) in str(refusal.value)


class Killed(BaseException):
    """Stands in for SIGKILL; nothing in the Runner catches it."""


class CrashWhileSaving(Hook):
    """Make the Runner's ``n``-th checkpoint write tear and die halfway."""

    def __init__(self, n):
        self.n = n

    def before_train(self, runner):
        save = runner.save_checkpoint
        calls = []

        def torn_save(out_dir, filename, *args, **kwargs):
            calls.append(filename)
            if len(calls) < self.n:
                return save(out_dir, filename, *args, **kwargs)
            with open(f'{out_dir}/{filename}', 'wb') as f:
                f.write(b'PK\x03\x04 half a checkpoint')
            raise Killed('killed while saving')

        runner.save_checkpoint = torn_save


def test_a_crash_while_saving_keeps_the_last_complete_checkpoint(
        train, demo_config, tiny_digits_options, tmp_path):
    # max_keep_ckpts=1: MMEngine's own hook deletes epoch_1.pth before it
    # writes epoch_2.pth.
    options = (*tiny_digits_options,
               'default_hooks.checkpoint.max_keep_ckpts=1')
    with pytest.raises(Killed):
        train(demo_config, tmp_path, options, hooks=[CrashWhileSaving(n=2)])

    assert (tmp_path / 'last_checkpoint').read_text() == \
        str(tmp_path / 'epoch_1.pth')
    assert not (tmp_path / 'epoch_2.pth').exists()
    resumed = train(demo_config, tmp_path, options, '--resume')
    assert 'resumed epoch: 1, iter: 4' in log_text(resumed)
    assert resumed.iter == 12
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_3.pth']


def test_same_seed_gives_the_same_loss_curve(train, demo_config,
                                             tiny_digits_options, tmp_path):
    """With random crops, shuffling and random init all seeded."""
    curves = {}
    for name, seed in (('a', 0), ('b', 0), ('other_seed', 1)):
        options = (*tiny_digits_options, f'randomness.seed={seed}',
                   'train_dataloader.dataset.num_samples=64',  # 6 iterations
                   'default_hooks.checkpoint.interval=3')
        runner = train(demo_config, tmp_path / name, options)
        curves[name] = history(runner, 'train/loss')

    assert len(curves['a']) == 6
    assert curves['a'] == curves['b']
    assert curves['a'] != curves['other_seed']


class RecordLinearDtypes(Hook):
    """Record the output dtype of the first Linear layer in training."""

    def __init__(self):
        self.dtypes = []

    def before_train(self, runner):
        linear = next(m for m in runner.model.modules()
                      if isinstance(m, torch.nn.Linear))
        linear.register_forward_hook(
            lambda module, args, out: self.dtypes.append(out.dtype)
            if module.training else None)


def test_amp_on_cpu_trains_in_bfloat16(train, demo_config,
                                       tiny_digits_options, tmp_path):
    recorder = RecordLinearDtypes()
    options = (*tiny_digits_options,
               'train_dataloader.dataset.num_samples=64',  # 6 iterations
               'default_hooks.checkpoint.interval=3')
    runner = train(demo_config, tmp_path, options, '--amp',
                   hooks=[recorder])

    assert type(runner.optim_wrapper).__name__ == 'CPUAmpOptimWrapper'
    assert recorder.dtypes == [torch.bfloat16] * 6
    losses = history(runner, 'train/loss')
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert all(p.dtype == torch.float32 for p in runner.model.parameters())
