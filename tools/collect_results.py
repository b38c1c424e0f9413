"""Collate training runs into the paper's tables.

    python tools/collect_results.py WORK_DIR [WORK_DIR ...] [--out results.md]
        [--param-cache FILE]

Each WORK_DIR is one run's ``--work-dir`` (a directory holding run
directories, e.g. ``work_dirs/``, is searched one level down). For every run
it reads the config MMEngine dumped (``<timestamp>/vis_data/config.py``), the
validation metrics of every session (``vis_data/scalars.json``), test-only
sessions (``<timestamp>/<timestamp>.json``) and the text logs, finds the
paper row the config reproduces (:func:`mmmpvg.paper_results.match_rows`)
and prints the paper's tables as Markdown: our #Params (the built model's,
cached by model config), our final / best metric, the paper's, the
difference, and the recipe flags: a total batch (batch size x world size
from the log) or a schedule (epochs or iterations reached) that differs from
the repository config of the same name, and resumed sessions. Runs that no
paper row fits are listed with the reason, never dropped.
"""
import argparse
import hashlib
import importlib
import json
import logging
import os
import os.path as osp
import re
import sys
from collections import defaultdict

import torch
import yaml
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

from mmmpvg.paper_results import (PAPER_ROWS, TABLES, match_rows,
                                  train_dataset)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Our metric name -> the key the evaluator logs and its scale to percent.
METRIC_KEYS = {
    'Top 1 Accuracy': ('accuracy/top1', 1),
    'box AP': ('coco/bbox_mAP', 100),
    'mask AP': ('coco/segm_mAP', 100),
    'mIoU': ('mIoU', 1),
}
SESSION = re.compile(r'^\d{8}_\d{6}$')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Print runs beside the paper's tables (Markdown)")
    parser.add_argument('work_dirs', nargs='+', help='run work dirs')
    parser.add_argument('--out', help='also write the Markdown to this file')
    parser.add_argument(
        '--param-cache',
        default=osp.join(osp.expanduser('~'), '.cache', 'mmmpvg',
                         'param_counts.json'),
        help='JSON file caching #Params per model config')
    return parser.parse_args(argv)


def find_run_dirs(paths):
    """Work dirs among ``paths``, looking one level into non-run dirs."""

    def is_run(path):
        return any(SESSION.match(d) and osp.isdir(osp.join(path, d))
                   for d in os.listdir(path))

    runs = []
    for path in paths:
        if not osp.isdir(path):
            raise FileNotFoundError(f'work dir {path!r} does not exist')
        if is_run(path):
            runs.append(path)
            continue
        children = sorted(
            osp.join(path, d) for d in os.listdir(path)
            if osp.isdir(osp.join(path, d)) and is_run(osp.join(path, d)))
        if not children:
            raise FileNotFoundError(
                f'{path!r} holds no MMEngine run (no <timestamp>/ session '
                'directory in it or in its subdirectories)')
        runs.extend(children)
    return runs


def read_json_lines(path):
    if not osp.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_session(run_dir, name):
    """One Runner session (train or test) of a work dir."""
    root = osp.join(run_dir, name)
    log_path = osp.join(root, f'{name}.log')
    log = open(log_path).read() if osp.exists(log_path) else ''
    scalars = read_json_lines(osp.join(root, 'vis_data', 'scalars.json'))
    train, val = [], []
    for entry in scalars:  # training iterations log an lr; evaluations not
        (train if 'lr' in entry else val).append(entry)
    # A test session dumps its metrics to <timestamp>/<timestamp>.json.
    test = read_json_lines(osp.join(root, f'{name}.json'))
    config = osp.join(root, 'vis_data', 'config.py')
    return dict(name=name, log=log, train=train, val=val, test=test,
                is_train='(train)' in log or bool(train),
                config=config if osp.exists(config) else None)


def metric_values(entries):
    """{metric name: [value in percent, ...]} over logged entries."""
    values = defaultdict(list)
    for entry in entries:
        for name, (key, scale) in METRIC_KEYS.items():
            if key in entry:
                values[name].append(entry[key] * scale)
    return values


def last_int(pattern, text):
    found = re.findall(pattern, text)
    return int(found[-1]) if found else None


def progress(sessions, cfg):
    """(unit, reached, planned in this run's config) of the training."""
    train_cfg = cfg.get('train_cfg') or {}
    by_epoch = 'max_epochs' in train_cfg
    log = '\n'.join(s['log'] for s in sessions)
    train_lines = [t for s in sessions for t in s['train']]
    last_iter = max((t.get('iter', t['step']) for t in train_lines),
                    default=0)
    if not by_epoch:
        saved = last_int(r'Saving checkpoint at (\d+) iterations', log) or 0
        return 'iterations', max(last_iter, saved), train_cfg.get('max_iters')
    saved = last_int(r'Saving checkpoint at (\d+) epochs', log) or 0
    per_epoch = last_int(r'Epoch\(train\)\s*\[\d+\]\[\s*\d+/(\d+)\]', log)
    done = last_iter // per_epoch if per_epoch else 0
    validated = max((v['step'] for s in sessions for v in s['val']),
                    default=0)
    return 'epochs', max(saved, done, validated), train_cfg['max_epochs']


def same_name_config(run_dir):
    """The repository config the run was started from, found by the name
    of the copy the Runner dumps into the work dir, or None."""
    for name in sorted(os.listdir(run_dir)):
        if not name.endswith('.py'):
            continue
        for root, _, files in os.walk(osp.join(REPO, 'configs')):
            if name in files and '_base_' not in root:
                return osp.join(root, name)
    return None


class RecipeConfigs:
    """Repository configs as recipes: loaded once, with their paper rows."""

    def __init__(self):
        self._configs = {}

    def load(self, path):
        if path is not None and path not in self._configs:
            cfg = Config.fromfile(path, import_custom_modules=False)
            self._configs[path] = (cfg, match_rows(cfg)[0])
        return self._configs[path][0] if path else None

    def metafile_configs(self):
        """Existing config paths the metafiles of model-index.yml list."""
        with open(osp.join(REPO, 'model-index.yml')) as f:
            metafiles = yaml.safe_load(f)['Import']
        for metafile in metafiles:
            with open(osp.join(REPO, metafile)) as f:
                for entry in yaml.safe_load(f)['Models']:
                    path = osp.join(REPO, entry['Config'])
                    if osp.exists(path):
                        yield path

    def find(self, same_name, rows):
        """The recipe of a run: for a paper row, the metafile config that
        reproduces it (the same-name one first), so that a demo on other
        data is measured against the paper's recipe; else the config of the
        same name."""
        if rows:
            listed = list(self.metafile_configs())
            for path in sorted(listed, key=lambda p: p != same_name):
                self.load(path)
                if rows[0] in self._configs[path][1]:
                    return path
        return same_name


def planned_total_batch(cfg, config_name):
    """The recipe's total batch: ``auto_scale_lr.base_batch_size``, else
    the ``NxbM`` of the config's name; None when neither says."""
    base = (cfg.get('auto_scale_lr') or {}).get('base_batch_size')
    if base:
        return base
    found = re.search(r'_(\d+)xb(\d+)', config_name or '')
    return int(found.group(1)) * int(found.group(2)) if found else None


def recipe_flags(run):
    """Where the run left its recipe: the repository config of its paper
    row (else of its name; else the run's own config)."""
    flags = []
    recipe_cfg = run['recipe_cfg']
    planned_cfg = recipe_cfg or run['cfg']
    name = osp.basename(run['recipe_config'] or '')
    data_root = train_dataset(run['cfg']).get('data_root')
    planned_root = train_dataset(planned_cfg).get('data_root')
    if data_root != planned_root:
        flags.append(f'data root {data_root} != {planned_root}')
    batch = (run['cfg'].get('train_dataloader') or {}).get('batch_size')
    planned = planned_total_batch(planned_cfg, name)
    if run['world_sizes'] and batch:
        world = run['world_sizes'][-1]
        total = world * batch
        if len(set(run['world_sizes'])) > 1:
            flags.append('world size changed between sessions: ' +
                         ' -> '.join(map(str, run['world_sizes'])))
        if planned is not None and total != planned:
            flags.append(f'total batch {total} ({world}x{batch}) != '
                         f'{planned}')
        elif planned is None and recipe_cfg is not None:
            # The recipe names no world size: compare the batch per process.
            recipe_batch = recipe_cfg.get('train_dataloader',
                                          {}).get('batch_size')
            if recipe_batch != batch:
                flags.append(f'batch {batch} per process != '
                             f'{recipe_batch}')
    unit, reached, planned_steps = run['progress']
    recipe_steps = (planned_cfg.get('train_cfg') or {}).get(
        'max_epochs' if unit == 'epochs' else 'max_iters', planned_steps)
    if run['is_train'] and reached != recipe_steps:
        flags.append(f'{unit} {reached}/{recipe_steps}')
    for epoch, it in run['resumed']:
        flags.append(f'resumed at epoch {epoch}, iter {it}')
    return flags


def read_run(run_dir):
    names = sorted(d for d in os.listdir(run_dir) if SESSION.match(d))
    sessions = [read_session(run_dir, n) for n in names]
    train = [s for s in sessions if s['is_train']]
    source = next((s['config'] for s in reversed(train or sessions)
                   if s['config']), None)
    if source is None:
        raise FileNotFoundError(f'{run_dir}: no dumped config '
                                '(<timestamp>/vis_data/config.py)')
    cfg = Config.fromfile(source, import_custom_modules=False)
    log = '\n'.join(s['log'] for s in train)
    val = metric_values(v for s in train for v in s['val'])
    test = metric_values(t for s in sessions if not s['is_train']
                         for t in s['test'])
    return dict(
        dir=run_dir, cfg=cfg, same_name_config=same_name_config(run_dir),
        is_train=bool(train),
        final={k: v[-1] for k, v in val.items()},
        best={k: max(v) for k, v in val.items()},
        test={k: v[-1] for k, v in test.items()},
        world_sizes=[int(n) for n in re.findall(r'GPU number: (\d+)', log)],
        progress=progress(train, cfg),
        resumed=[tuple(map(int, m)) for m in
                 re.findall(r'resumed epoch: (\d+), iter: (\d+)', log)])


def count_parameters(cfg, cache):
    """#Params of the model ``cfg`` builds, built once per model config
    (on the meta device when the model allows it: no memory, no init)."""
    scope = cfg.get('default_scope', 'mmpretrain')
    key = hashlib.sha256(json.dumps(
        [scope, cfg.get('custom_imports'), cfg.model.to_dict()],
        sort_keys=True, default=str).encode()).hexdigest()
    if key not in cache:
        for module in (cfg.get('custom_imports') or {}).get('imports', []):
            try:
                importlib.import_module(module)
            except ImportError:  # e.g. a hook module only the run had
                pass
        init_default_scope(scope)
        models = importlib.import_module(f'{scope}.registry').MODELS
        # Builders log to stdout, where the report goes.
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            with torch.device('meta'):
                model = models.build(cfg.model)
        except Exception:  # an __init__ that needs real tensor values
            model = models.build(cfg.model)
        finally:
            logger.setLevel(level)
        cache[key] = sum(p.numel() for p in model.parameters())
    return cache[key]


def try_count_parameters(run, cache):
    """#Params, or None with a flag when this code cannot build the run's
    model (e.g. a config from an older version)."""
    try:
        return count_parameters(run['cfg'], cache)
    except Exception as error:
        run['flags'].append(f'#Params: model does not build here '
                            f'({type(error).__name__}: {error})')
        return None


def fmt(value, digits=2):
    return '—' if value is None else f'{value:.{digits}f}'


def millions(count):
    """Cut, not rounded, to 3 decimals, as the paper prints #Params."""
    return '—' if count is None else f'{int(count / 1000) / 1000:.3f}'


def ours(run, metric):
    """Final / best validation value, or the test value of a test-only
    work dir."""
    if metric in run['final']:
        final, best = run['final'][metric], run['best'][metric]
        return final, (fmt(final) if final == best else
                       f'{fmt(final)} / best {fmt(best)}')
    if metric in run['test']:
        return run['test'][metric], f'{fmt(run["test"][metric])} (test)'
    return None, '—'


def table_markdown(table, runs_by_row, labels):
    caption, metrics = TABLES[table]
    header = ['Model', 'Method', '#Params (M)', 'paper #Params (M)']
    for metric in metrics:
        header += [f'{metric}', f'paper {metric}', 'Δ']
    header += ['run', 'recipe']
    lines = [f'### {table}: {caption}', '',
             '| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    for row in (r for r in PAPER_ROWS if r.table == table):
        for run in runs_by_row.get(row, [None]):
            method = (row.method if row.source == table else
                      f'{row.method} ({row.source})')
            cells = [row.model, method,
                     millions(run['params']) if run else '—',
                     fmt(row.params_m, 3)]
            for metric in metrics:
                paper = row.metrics.get(metric)
                value, text = ours(run, metric) if run else (None, '—')
                delta = (f'{value - paper:+.2f}'
                         if value is not None and paper is not None else '—')
                cells += [text, fmt(paper), delta]
            cells += [labels[run['dir']] if run else 'not run',
                      '; '.join(run['flags']) if run else '']
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def unmapped_markdown(runs, labels):
    lines = ['### Unmapped runs', '',
             '| run | config | #Params (M) | metrics | recipe | why |',
             '|---|---|---|---|---|---|']
    for run in runs:
        metrics = ', '.join(
            f'{m} {ours(run, m)[1]}' for m in METRIC_KEYS
            if m in run['final'] or m in run['test']) or 'none logged'
        lines.append('| ' + ' | '.join([
            labels[run['dir']],
            osp.relpath(run['recipe_config'], REPO) if run['recipe_config']
            else osp.basename(run['cfg'].filename), millions(run['params']),
            metrics, '; '.join(run['flags']), run['why']]) + ' |')
    return '\n'.join(lines)


def collect(work_dirs, param_cache=None):
    """The Markdown report for ``work_dirs``."""
    cache = {}
    if param_cache and osp.exists(param_cache):
        with open(param_cache) as f:
            cache = json.load(f)
    runs = [read_run(d) for d in find_run_dirs(work_dirs)]
    labels = {r['dir']: osp.normpath(r['dir']) for r in runs}
    runs_by_row, unmapped = defaultdict(list), []
    recipes = RecipeConfigs()
    for run in runs:
        rows, run['why'] = match_rows(run['cfg'])
        run['recipe_config'] = recipes.find(run['same_name_config'], rows)
        run['recipe_cfg'] = recipes.load(run['recipe_config'])
        run['flags'] = recipe_flags(run)
        run['params'] = try_count_parameters(run, cache)
        for row in rows:
            runs_by_row[row].append(run)
        if not rows:
            unmapped.append(run)
    if param_cache:
        os.makedirs(osp.dirname(osp.abspath(param_cache)), exist_ok=True)
        with open(param_cache, 'w') as f:
            json.dump(cache, f, indent=1, sort_keys=True)

    shown = [t for t in TABLES
             if any(row.table == t for row in runs_by_row)]
    parts = ['## Our runs beside the paper\n\n'
             f'{len(runs)} run(s); Δ = ours (final) − paper. Tables without '
             'a run: ' + (', '.join(t for t in TABLES if t not in shown)
                          or 'none') + '.']
    parts += [table_markdown(t, runs_by_row, labels) for t in shown]
    if unmapped:
        parts.append(unmapped_markdown(unmapped, labels))
    return '\n\n'.join(parts) + '\n'


def main(argv=None):
    args = parse_args(argv)
    report = collect(args.work_dirs, args.param_cache)
    sys.stdout.write(report)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(report)


if __name__ == '__main__':
    main()
