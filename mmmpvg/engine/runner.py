"""What tools/train.py and tools/test.py share: CLI overrides and the Runner."""
import os.path as osp

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

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


def build_runner(cfg):
    """The config's Runner, with the CPU-distributed set-up done first."""
    setup_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
