"""The model-zoo tables of README.md, docs/en/model_zoo.md and each
configs/<family>/README.md, generated from the code.

Paper numbers come from ``mmmpvg.paper_results`` (the row each config
reproduces, found by ``match_rows``); #Params are counted on the model each
config builds (``tools/collect_results.py``'s counter, on the meta device);
the recipe column is read from the config. Each table sits between
``<!-- zoo-table NAME -->`` and ``<!-- /zoo-table -->`` in its markdown
file; ``NAME`` is ``summary`` or a config folder.

    python docs/en/zoo_tables.py           # exit 1 and show what differs
    python docs/en/zoo_tables.py --write   # rewrite the tables in place
"""
import argparse
import difflib
import glob
import importlib.util
import os
import os.path as osp
import re
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(REPO, 'configs')
# The files holding generated tables, and the folder their links start from.
FILES = ['README.md', 'docs/en/model_zoo.md'] + sorted(
    osp.relpath(p, REPO) for p in glob.glob(f'{CONFIGS}/*/README.md'))
TABLE = re.compile(r'(<!-- zoo-table (\S+) -->\n)(.*?)(<!-- /zoo-table -->)',
                   re.S)
SUMMARY_TABLES = ('Table 1', 'Table 2', 'Table 3', 'Table 4')
METHODS = ('Default', 'LaPE', 'PVG', 'MPVG')


def _load_collect_results():
    spec = importlib.util.spec_from_file_location(
        'collect_results', osp.join(REPO, 'tools', 'collect_results.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def families():
    """The config folders, one per model family."""
    return sorted(d for d in os.listdir(CONFIGS)
                  if osp.isdir(osp.join(CONFIGS, d)) and not d.startswith('_'))


def family_configs(family):
    """Every config of a folder, sub-folders (ablations, shapes) included,
    ``_base_`` excluded, as paths relative to the folder."""
    root = osp.join(CONFIGS, family)
    paths = glob.glob(f'{root}/*.py') + glob.glob(f'{root}/*/*.py')
    return sorted(osp.relpath(p, root) for p in paths
                  if '_base_' not in p.split(osp.sep))


class Zoo:
    """Configs, their paper rows and their built #Params, loaded once."""

    def __init__(self, only=None):
        """``only``: the config folders to load (default: all)."""
        from mmengine.config import Config

        from mmmpvg.paper_results import PAPER_ROWS, match_rows
        self._count = _load_collect_results().count_parameters
        self._cache = {}
        # family -> [(relative path, cfg, rows)] in the paper's row order,
        # configs without a row last.
        self.entries = {}
        order = {id(row): i for i, row in enumerate(PAPER_ROWS)}
        for family in only or families():
            entries = []
            for rel in family_configs(family):
                cfg = Config.fromfile(osp.join(CONFIGS, family, rel))
                entries.append((rel, cfg, match_rows(cfg)[0]))
            self.entries[family] = sorted(entries, key=lambda e: (min(
                (order[id(r)] for r in e[2]), default=len(order)), e[0]))

    def params(self, cfg):
        return self._count(cfg, self._cache)

    def row_configs(self):
        """Paper row (by identity) -> (family, relative path, cfg)."""
        return {id(row): (family, rel, cfg)
                for family, entries in self.entries.items()
                for rel, cfg, rows in entries for row in rows}


def metric_text(metrics):
    """As the paper prints them: AP with one decimal, the rest with two."""
    return ' / '.join(f'{v:.{1 if name.endswith("AP") else 2}f}'
                      for name, v in metrics.items())


def recipe(rel, cfg):
    """Total batch, length and optimizer, read from the config."""
    gpus = re.search(r'_(\d+)xb\d+', rel)
    batch = cfg.train_dataloader.batch_size
    total = f'{gpus.group(1)}x{batch}' if gpus else f'{batch}'
    train = cfg.train_cfg
    length = (f"{train['max_iters']:,} iters" if 'max_iters' in train
              else f"{train['max_epochs']} epochs")
    optimizer = cfg.optim_wrapper.optimizer
    return (f"batch {total}, {length}, "
            f"{optimizer['type']} lr {optimizer['lr']:g}")


def family_table(zoo, family):
    """One line per config; paper columns that no config of the folder
    fills (the demo's, the adapter's #Params) are left out."""
    header = ('config', '#Params (built)', 'paper row', 'paper #Params (M)',
              'paper metric', 'recipe')
    rows = []
    for rel, cfg, paper in zoo.entries[family]:
        where, paper_params, metric = 'none', '', ''
        if paper:
            where = ', '.join(f'{r.source} {r.model} {r.method}'
                              for r in paper)
            if paper[0].params_m is not None:
                paper_params = f'{paper[0].params_m:.3f}'
            names = ' / '.join(paper[0].metrics)
            metric = (f'{metric_text(paper[0].metrics)} ({names})'
                      if paper[0].metrics else 'bar only, no number')
        rows.append((f'`{rel}`', f'{zoo.params(cfg):,}', where,
                     paper_params, metric, recipe(rel, cfg)))
    keep = [i for i, name in enumerate(header)
            if not name.startswith('paper')
            or any(row[i] not in ('', 'none') for row in rows)]
    lines = ['| ' + ' | '.join(header[i] for i in keep) + ' |',
             '|' + '---|' * len(keep)]
    lines += ['| ' + ' | '.join(row[i] for i in keep) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


def summary_table(zoo, start_dir):
    """One line per model and data set of Tables 1-4: each method's paper
    metric with the #Params of the config that reproduces it."""
    from mmmpvg.paper_results import PAPER_ROWS, TABLES
    configs = zoo.row_configs()
    models = {}
    for row in PAPER_ROWS:
        if row.table in SUMMARY_TABLES:
            models.setdefault((row.table, row.model, row.dataset), {})[
                row.method] = row
    lines = ['| model | data set (metric) | ' + ' | '.join(METHODS) +
             ' | configs |', '|---|---|' + '---|' * len(METHODS) + '---|']
    for (table, model, dataset), rows in models.items():
        cells, folders = [], []
        for method in METHODS:
            row = rows[method]
            family, _, cfg = configs[id(row)]
            cells.append(f'{metric_text(row.metrics)} ({zoo.params(cfg):,})')
            if family not in folders:
                folders.append(family)
        metric = ' / '.join(TABLES[table][1])
        links = ', '.join(
            f'[{f}]({osp.relpath(osp.join(CONFIGS, f), start_dir)})'
            for f in folders)
        lines.append(f'| {model} | {dataset} ({metric}) | ' +
                     ' | '.join(cells) + f' | {links} |')
    return '\n'.join(lines) + '\n'


def render(zoo, path):
    """The file's text with every table regenerated."""
    with open(osp.join(REPO, path)) as f:
        text = f.read()
    start_dir = osp.dirname(osp.join(REPO, path))

    def table(match):
        name = match.group(2)
        body = summary_table(zoo, start_dir) if name == 'summary' \
            else family_table(zoo, name)
        return match.group(1) + body + match.group(4)

    return text, TABLE.sub(table, text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--write', action='store_true',
                        help='rewrite the tables in place')
    args = parser.parse_args()
    zoo = Zoo()
    stale = False
    for path in FILES:
        if not osp.exists(osp.join(REPO, path)):
            continue
        old, new = render(zoo, path)
        if old == new:
            continue
        if args.write:
            with open(osp.join(REPO, path), 'w') as f:
                f.write(new)
            print(f'rewrote {path}')
        else:
            stale = True
            sys.stdout.writelines(difflib.unified_diff(
                old.splitlines(True), new.splitlines(True), path, path))
    return 1 if stale else 0


if __name__ == '__main__':
    sys.exit(main())
