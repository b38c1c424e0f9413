"""tools/demo_digits.py, scaled down: its command line, output and files."""
import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

METHODS = ('default', 'mpvg')
SEEDS = (0, 1)


def run_demo(repo_root, work_dir, workers):
    """2 methods x 2 seeds, 3 epochs on 64 training and 40 test images."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(repo_root))
    result = subprocess.run(
        [sys.executable, str(repo_root / 'tools' / 'demo_digits.py'),
         '--methods', *METHODS, '--seeds', *map(str, SEEDS),
         '--epochs', '3', '--num-train', '64', '--num-test', '40',
         '--workers', str(workers), '--work-dir', str(work_dir)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:]
                                    + result.stderr[-3000:])
    with open(work_dir / 'results.json') as f:
        return result.stdout, json.load(f)


@pytest.fixture(scope='module')
def parallel_run(repo_root, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('demo_parallel')
    return work_dir, *run_demo(repo_root, work_dir, workers=2)


def test_demo_prints_every_seed_and_the_spread(parallel_run):
    work_dir, stdout, results = parallel_run
    progress = re.findall(r'\[ ?(\d)/4 .*\] +(.+?) +seed (\d): +([\d.]+) %',
                          stdout)
    assert sorted(int(p[0]) for p in progress) == [1, 2, 3, 4]
    assert sorted((p[1], int(p[2])) for p in progress) == [
        ('Default (cls)', 0), ('Default (cls)', 1),
        ('MPVG (GAP)', 0), ('MPVG (GAP)', 1)]
    assert 'test split (40 images)' in stdout
    for method, label in (('default', 'Default (cls)'),
                          ('mpvg', 'MPVG (GAP)')):
        entry = results['methods'][method]
        assert entry['seeds'] == list(SEEDS)
        assert len(entry['val_top1']) == 2
        assert all(len(curve) == 3 for curve in entry['val_top1'])
        # The test of the final epoch is the last validation (same split).
        assert entry['top1'] == [curve[-1] for curve in entry['val_top1']]
        seeds = ', '.join(f'{v:.2f}' for v in entry['top1'])
        mean = sum(entry['top1']) / 2
        std = abs(entry['top1'][0] - entry['top1'][1]) / 2 ** 0.5
        assert f"{label:<14} {mean:6.2f} ± {std:4.2f} %   [{seeds}]" in stdout
    assert 0 < results['logistic_regression_top1'] <= 100
    for name in ('demo_digits.png', 'pe_correlation.png'):
        with open(work_dir / name, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(work_dir / 'pe_correlation.json') as f:
        (model, ) = json.load(f)['models']
    assert model['method'] == 'mpvg' and model['last_norm_pearson'] is not None


def test_demo_repeats_its_numbers(parallel_run, repo_root, tmp_path):
    """Same seeds, same numbers, whether the runs share a process or not;
    the seed itself changes them."""
    _, _, first = parallel_run
    _, second = run_demo(repo_root, tmp_path, workers=1)
    for method in METHODS:
        for key in ('top1', 'val_top1'):
            assert second['methods'][method][key] == \
                first['methods'][method][key], (method, key)
    runs = {(r['method'], r['seed']): r for r in first['runs']}
    assert runs['mpvg', 0]['val_top1'] != runs['mpvg', 1]['val_top1'] or \
        runs['default', 0]['val_top1'] != runs['default', 1]['val_top1']
