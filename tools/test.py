"""Test a checkpoint of any mmmpvg config with MMEngine's Runner.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--out-item {pred,metrics}] [--amp | --int8 [SCHEME]]
        [--cfg-options KEY=VALUE ...] [--launcher L]

In a distributed run (tools/dist_test.sh) every rank evaluates a share of
the test set and the evaluator gathers all predictions, each sample once,
before computing the metrics.
"""
import argparse
import os

import mmengine
from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults
from mmmpvg.deploy import model_task
from mmmpvg.deploy.quantization import (Int8TestHook, add_int8_argument,
                                        check_int8)
from mmmpvg.engine import enable_test_amp
from mmmpvg.engine.runner import apply_common_args
from mmmpvg.engine.runner import build_runner as build_config_runner
from mmmpvg.engine.cli import add_debug_arg, run_tool
from mmmpvg.engine.smoke import add_smoke_args, apply_smoke_args


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the dir to save the evaluation log and metrics')
    parser.add_argument(
        '--out',
        help='file to dump the predictions (.pkl) or the metrics '
        '(--out-item metrics; .pkl, .json or .yaml) to')
    parser.add_argument(
        '--out-item',
        choices=['pred', 'metrics'],
        default='pred',
        help='what --out holds')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='inference under autocast: fp16 on CUDA, bf16 on CPU')
    add_int8_argument(parser)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. test_dataloader.batch_size=8')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_smoke_args(parser)
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if args.out and args.out_item == 'pred' and not args.out.endswith(
            ('.pkl', '.pickle')):
        parser.error(f'--out must be a .pkl file for predictions, '
                     f'got {args.out}')
    if args.amp and args.int8:
        parser.error('--amp (bf16/fp16 autocast) and --int8 exclude each '
                     'other: choose one.')
    return args


def merge_args(cfg, args):
    """Apply the command line to the config (CLI beats config)."""
    apply_smoke_args(cfg, args)
    apply_common_args(cfg, args)
    if args.amp:
        enable_test_amp(cfg)
    if args.int8:
        check_int8(model_task(cfg))
    cfg.load_from = args.checkpoint
    return cfg


def build_runner(args):
    """The Runner for ``args``, with CPU-distributed set-up done."""
    runner = build_config_runner(
        merge_args(Config.fromfile(args.config), args),
        require_all_weights=True)
    if args.out and args.out_item == 'pred':
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))
    if args.int8:
        runner.register_hook(Int8TestHook(args.int8))
    return runner


def main(argv=None):
    args = parse_args(argv)
    runner = build_runner(args)
    metrics = runner.test()
    if args.out and args.out_item == 'metrics' and runner.rank == 0:
        mmengine.dump(metrics, args.out)
    return metrics


if __name__ == '__main__':
    run_tool(main)
