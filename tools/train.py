"""Train any mmmpvg config (mmpretrain, mmdet or mmseg) with MMEngine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher L]

The config's ``default_scope`` picks the registry (mmpretrain, mmdet, mmseg).
Multi-process runs: tools/dist_train.sh (torchrun) or tools/slurm_train.sh.
"""
import argparse
import os

from mmengine.config import Config, DictAction
from mmmpvg.engine import enable_amp
from mmmpvg.engine.runner import apply_common_args
from mmmpvg.engine.runner import build_runner as build_config_runner
from mmmpvg.engine.cli import add_debug_arg, run_tool
from mmmpvg.engine.smoke import add_smoke_args, apply_smoke_args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or without a value from the '
        'latest checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: fp16 (AmpOptimWrapper) on CUDA, bf16 on CPU')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by the actual over the config\'s base batch size')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. train_cfg.max_epochs=1; '
        'lists as key="[a,b]", nested lists/tuples with quotes')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_smoke_args(parser)
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg, args):
    """Apply the command line to the config (CLI beats config)."""
    apply_smoke_args(cfg, args)
    apply_common_args(cfg, args)
    if args.amp:
        enable_amp(cfg)

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in \
                cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs auto_scale_lr = dict('
                             'base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def build_runner(args):
    """The Runner for ``args``, with CPU-distributed set-up done."""
    return build_config_runner(merge_args(Config.fromfile(args.config), args))


def main(argv=None):
    build_runner(parse_args(argv)).train()


if __name__ == '__main__':
    run_tool(main)
