"""Every PE method on scikit-learn's digits: one recipe, several seeds.

Trains five micro ViTs (configs/demo/) that differ only in PE method and
pooling -- Default (class token), Default (GAP), LaPE (class token), PVG
(GAP), MPVG (GAP) -- for each seed through mmpretrain's Runner, as parallel
one-thread processes, and tests the final epoch on the 450-image test split.
Prints a line per finished run, then mean +- sample std and every seed, and
writes to --work-dir:

  results.json         every run's test top-1 and validation top-1 per epoch
  demo_digits.png      test top-1 per method (seeds, mean +- std) and the
                       validation top-1 per epoch (mean, min-max band)
  pe_correlation.png   Fig. 4 of the paper for the layer-wise models (first
                       seed), drawn by tools/analysis/pe_correlation.py
  <method>_seed<s>/    each run's work dir (config, checkpoint, scalars.json)

    python tools/demo_digits.py [--seeds 0 1 2] [--workers 2]
"""
import argparse
import importlib.util
import multiprocessing
import os.path as osp
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mmmpvg  # noqa: F401  (registers the backbone and the data set)
from mmmpvg.analysis.plotting import new_figure, save_figure, write_json

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# key: (label, config); the order of the printed table and the plots.
METHODS = {
    'default': ('Default (cls)', 'configs/demo/default_vit-micro_digits.py'),
    'default-gap': ('Default (GAP)',
                    'configs/demo/default-gap_vit-micro_digits.py'),
    'lape': ('LaPE (cls)', 'configs/demo/lape_vit-micro_digits.py'),
    'pvg': ('PVG (GAP)', 'configs/demo/pvg_vit-micro_digits.py'),
    'mpvg': ('MPVG (GAP)', 'configs/demo/mpvg_vit-micro_digits.py'),
}
LAYERWISE = ('lape', 'pvg', 'mpvg')  # the models Fig. 4 compares


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--methods', nargs='+', choices=list(METHODS),
                        default=list(METHODS), help='default: all five')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument(
        '--workers', type=int, default=2,
        help='runs trained at a time, one thread each; 1 trains them one '
        'after another in this process (default: %(default)s)')
    parser.add_argument('--epochs', type=int,
                        help="default: the config's max_epochs")
    parser.add_argument('--num-train', type=int,
                        help='first training images only (quick runs)')
    parser.add_argument('--num-test', type=int,
                        help='first test images only (quick runs)')
    parser.add_argument('--work-dir', default='work_dirs/demo_digits')
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error('--workers must be >= 1')
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds repeats a seed: {args.seeds}')
    return args


def run_config(method: str, seed: int, args) -> Config:
    """The method's config as this demo trains it."""
    cfg = Config.fromfile(osp.join(REPO, METHODS[method][1]))
    name = f'{method}_seed{seed}'
    cfg.work_dir = osp.join(args.work_dir, name)
    # MMEngine keeps one logger/message hub per experiment name.
    cfg.experiment_name = f'{name}-{uuid.uuid4().hex[:8]}'
    cfg.randomness = dict(seed=seed, deterministic=True)
    cfg.log_level = 'ERROR'  # keep the console to one line per run
    # The workers are spawned; as num_workers=0, this matters nowhere else.
    cfg.env_cfg.mp_cfg.mp_start_method = 'spawn'
    if args.epochs is not None:
        cfg.train_cfg.max_epochs = args.epochs
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.checkpoint.interval = cfg.train_cfg.max_epochs
    for split, num_samples in (('train', args.num_train),
                               ('val', args.num_test),
                               ('test', args.num_test)):
        if num_samples is not None:
            cfg[f'{split}_dataloader'].dataset.num_samples = num_samples
    return cfg


def train_one(method: str, seed: int, args) -> dict:
    """Train and test one model; runs in a worker process."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    cfg = run_config(method, seed, args)
    runner = Runner.from_cfg(cfg)
    runner.train()
    # RuntimeInfoHook stores each validation metric in the message hub.
    val_top1 = runner.message_hub.get_scalar('val/accuracy/top1').data[0]
    top1 = runner.test()['accuracy/top1']
    with open(osp.join(cfg.work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    return dict(
        method=method, seed=seed, top1=float(top1),
        val_top1=[float(v) for v in val_top1],
        config=osp.join(cfg.work_dir, osp.basename(cfg.filename)),
        checkpoint=checkpoint, seconds=time.perf_counter() - start)


def _one_thread():
    torch.set_num_threads(1)


def train_all(jobs, args):
    """Yield each run's result as it finishes."""
    if args.workers == 1:
        for method, seed in jobs:
            yield train_one(method, seed, args)
        return
    # spawn: fresh workers, no forked OpenMP/torch state.
    with ProcessPoolExecutor(
            args.workers, mp_context=multiprocessing.get_context('spawn'),
            initializer=_one_thread) as pool:
        futures = [pool.submit(train_one, method, seed, args)
                   for method, seed in jobs]
        for future in as_completed(futures):
            yield future.result()


def logistic_regression(args):
    """The reference: logistic regression on the raw 8x8 pixels, same split.
    Returns (test top-1 %, number of test images)."""
    from sklearn.linear_model import LogisticRegression

    from mmmpvg.datasets import SklearnDigits

    def arrays(split, num_samples):
        data = SklearnDigits(split=split, upscale=1, num_samples=num_samples,
                             serialize_data=False)
        images = np.stack([d['img'][..., 0] for d in data.data_list])
        labels = np.array([d['gt_label'] for d in data.data_list])
        return images.reshape(len(images), -1) / 255.0, labels

    train_x, train_y = arrays('train', args.num_train)
    test_x, test_y = arrays('test', args.num_test)
    classifier = LogisticRegression(max_iter=2000).fit(train_x, train_y)
    top1 = 100.0 * float((classifier.predict(test_x) == test_y).mean())
    return top1, len(test_y)


def summarize(results, methods):
    summary = {}
    for method in methods:
        runs = sorted((r for r in results if r['method'] == method),
                      key=lambda r: r['seed'])
        top1 = np.array([r['top1'] for r in runs])
        summary[method] = dict(
            label=METHODS[method][0], seeds=[r['seed'] for r in runs],
            top1=top1.tolist(), mean=float(top1.mean()),
            std=float(top1.std(ddof=1)) if len(top1) > 1 else 0.0,
            val_top1=[r['val_top1'] for r in runs])
    return summary


def plot_accuracy(summary, reference: float, path: str) -> str:
    fig, axes = new_figure(1, 2, panel_size=(5.2, 3.8))
    spread, curves = axes[0]
    for index, (method, entry) in enumerate(summary.items()):
        color = f'C{index}'
        spread.scatter([index] * len(entry['top1']), entry['top1'],
                       color=color, alpha=0.6, s=18)
        spread.errorbar([index + 0.15], [entry['mean']], [entry['std']],
                        color=color, marker='_', markersize=14, capsize=4)
        val = np.array(entry['val_top1'])  # seeds x epochs
        epochs = np.arange(1, val.shape[1] + 1)
        curves.plot(epochs, val.mean(0), color=color, label=entry['label'])
        curves.fill_between(epochs, val.min(0), val.max(0), color=color,
                            alpha=0.2, linewidth=0)
    for ax in (spread, curves):
        ax.axhline(reference, color='grey', linestyle='--', linewidth=1,
                   label='logistic regression, raw pixels')
        ax.grid(alpha=0.3)
    spread.set_xticks(range(len(summary)))
    spread.set_xticklabels([e['label'] for e in summary.values()],
                           rotation=20, fontsize=8)
    spread.set_ylabel('test top-1 (%)')
    spread.set_title('Final epoch: each seed (dots), mean ± std', fontsize=9)
    curves.set_xlabel('epoch')
    curves.set_ylabel('validation top-1 (%)')
    curves.set_title('Per epoch: mean over seeds, min-max band', fontsize=9)
    curves.set_ylim(max(0.0, min(curves.get_ylim()[0], reference - 10)), 100)
    curves.legend(fontsize=7, loc='lower right')
    return save_figure(fig, path)


def plot_pe_correlation(results, methods, out_dir: str):
    """Fig. 4 for the layer-wise models of the first seed, through the
    analysis tool's own code."""
    layerwise = [m for m in methods if m in LAYERWISE]
    if not layerwise:
        return None
    spec = importlib.util.spec_from_file_location(
        'pe_correlation', osp.join(REPO, 'tools/analysis/pe_correlation.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    first_seed = min(r['seed'] for r in results)
    argv = ['--split', 'test', '--out-dir', out_dir]
    for method in layerwise:
        run = next(r for r in results
                   if r['method'] == method and r['seed'] == first_seed)
        argv += ['--model', run['config'], run['checkpoint'],
                 f'{METHODS[method][0]}, seed {first_seed}']
    tool.main(argv)
    return osp.join(out_dir, 'pe_correlation.png')


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    schedule = run_config(args.methods[0], args.seeds[0], args)
    warmup = max(s.get('begin', 0) for s in schedule.param_scheduler)
    if schedule.train_cfg.max_epochs <= warmup:
        raise ValueError(f'--epochs {schedule.train_cfg.max_epochs} leaves '
                         f'no epoch after the {warmup} warm-up epochs of the '
                         'configs; use more.')
    # Seed-major order: every method's first seed finishes early.
    jobs = [(method, seed) for seed in args.seeds for method in args.methods]
    print(f'Training {len(jobs)} runs ({len(args.methods)} methods x '
          f'{len(args.seeds)} seeds), {args.workers} at a time, one thread '
          'each:', flush=True)
    start = time.perf_counter()
    results = []
    for run in train_all(jobs, args):
        results.append(run)
        elapsed = time.perf_counter() - start
        print(f'  [{len(results):2d}/{len(jobs)}  {elapsed // 60:.0f}:'
              f'{elapsed % 60:04.1f}]  {METHODS[run["method"]][0]:<14} seed '
              f'{run["seed"]}: {run["top1"]:6.2f} %  ({run["seconds"]:.0f} s)',
              flush=True)
    summary = summarize(results, args.methods)
    reference, num_test = logistic_regression(args)
    print(f'\nTop-1 on the digits test split ({num_test} images), final '
          f'epoch, mean ± sample std over seeds {args.seeds}; every seed:')
    for entry in summary.values():
        seeds = ', '.join(f'{v:.2f}' for v in entry['top1'])
        print(f"  {entry['label']:<14} {entry['mean']:6.2f} ± "
              f"{entry['std']:4.2f} %   [{seeds}]")
    print('  (logistic regression on the raw 8x8 pixels, same split: '
          f'{reference:.2f} %)')

    figure = plot_accuracy(summary, reference,
                           osp.join(args.work_dir, 'demo_digits.png'))
    correlation = plot_pe_correlation(results, args.methods, args.work_dir)
    wall = time.perf_counter() - start
    json_path = write_json(osp.join(args.work_dir, 'results.json'), dict(
        top1='test top-1 (%) of the final epoch; val_top1: validation '
        'top-1 (%) after each epoch (MMEngine message hub), one list a seed',
        num_test_images=num_test, logistic_regression_top1=reference,
        methods=summary, runs=sorted(
            results, key=lambda r: (list(METHODS).index(r['method']),
                                    r['seed'])),
        workers=args.workers, wall_seconds=wall))
    print(f'\nwrote {figure}, {correlation or "(no layer-wise model)"}, '
          f'{json_path}\nwall time {wall // 60:.0f} min {wall % 60:.0f} s')
    return summary


if __name__ == '__main__':
    main()
