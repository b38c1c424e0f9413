"""One check of the project on a machine with one CUDA GPU.

Runs, each as its own command with a time limit (together at most 8 min):
the CUDA tests (``pytest -m cuda``: mmcv's compiled deformable attention
against the PyTorch path, the CUDA peak-memory probe), an iteration-bounded
GPU training run of each shapes demo (Mask R-CNN in fp32 and UperNet in
fp16, as their full recipes, both with the compiled deformable-attention op),
``tools/test.py --amp`` on a classification checkpoint trained first, and
``tools/benchmark.py`` / ``tools/benchmark_adapter.py`` on CUDA. Writes
``summary.json`` and ``summary.md`` (and one log per step) to the output
folder; exits 1 if any step failed, a CUDA test was skipped, or no GPU is
visible.

    bash tools/gpu_check.sh [--out-dir DIR] [--steps NAME ...] [--dry-run]
"""
import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from typing import Callable, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_S = 480
SHAPES = os.path.join(REPO, 'configs', 'vit_adapter', 'shapes')
DIGITS = os.path.join(REPO, 'configs', 'demo', 'mpvg_vit-micro_digits.py')
# Fail instead of falling back when the compiled op is missing.
COMPILED_MSDA = 'model.backbone.msda_backend=compiled'


@dataclasses.dataclass
class Step:
    name: str
    what: str
    argv: List[str]
    timeout_s: int
    needs: Optional[str] = None
    # (out_dir) -> problem or None: a check of what a passing command wrote.
    verify: Optional[Callable[[str], Optional[str]]] = None


def tool(name: str) -> List[str]:
    return [sys.executable, os.path.join(REPO, 'tools', name)]


def deit_benchmark(out: str, name: str, *rows_and_options) -> List[str]:
    return tool('benchmark.py') + [
        '--device', 'cuda', '--arch', 'deit-tiny', '--batch-size', '64',
        '--rounds', '5', '--json', os.path.join(out, f'{name}.json'),
        '--rows', *rows_and_options]


def junit_problem(path: str) -> Optional[str]:
    """Skipped CUDA tests are failures here: the GPU should run them all."""
    if not os.path.exists(path):
        return f'no JUnit report at {path}'
    suite = ET.parse(path).getroot()
    suite = suite.find('testsuite') if suite.tag == 'testsuites' else suite
    if int(suite.get('tests', 0)) == 0:
        return 'no CUDA test was collected'
    skipped = [f"{case.get('name')}: {skip.get('message')}"
               for case in suite.iter('testcase')
               for skip in case.findall('skipped')]
    return f"skipped on the GPU: {'; '.join(skipped)}" if skipped else None


def json_problem(path: str, key: str, expected) -> Optional[str]:
    if not os.path.exists(path):
        return f'no {path}'
    with open(path) as f:
        value = json.load(f).get(key)
    return None if value == expected else f'{key} is {value!r}'


def plan(out: str) -> List[Step]:
    """The steps, in order, writing under ``out``."""
    data = os.path.join(out, 'data')
    junit = os.path.join(out, 'cuda_tests.xml')
    return [
        Step('cuda-tests',
             'pytest -m cuda: compiled MSDA vs PyTorch path (fp32, fp16; '
             'forward, backward; adapter shapes), CUDA peak memory',
             [sys.executable, '-m', 'pytest', os.path.join(REPO, 'tests'),
              '-m', 'cuda', '-q', '-rs', '-p', 'no:cacheprovider',
              f'--junitxml={junit}'], 90,
             verify=lambda _: junit_problem(junit)),
        Step('data-coco', 'generated shapes data, COCO format',
             tool('make_shapes_data.py') + [
                 'coco', os.path.join(data, 'shapes_coco'), '--train', '16',
                 '--val', '8', '--size', '64', '64', '--shape-size', '0.3',
                 '0.6'], 10),
        Step('data-ade20k', 'generated shapes data, ADE20K format',
             tool('make_shapes_data.py') + [
                 'ade20k', os.path.join(data, 'shapes_ade20k'), '--train',
                 '16', '--val', '4', '--size', '96', '128'], 10),
        Step('train-mask-rcnn',
             'Mask R-CNN shapes demo, 1 epoch (8 iterations) + val, fp32, '
             'compiled MSDA',
             tool('train.py') + [
                 os.path.join(SHAPES,
                              'mask-rcnn_vit-adapter-ti-mpvg_fpn_shapes.py'),
                 '--work-dir', os.path.join(out, 'mask-rcnn'),
                 '--cfg-options', COMPILED_MSDA, 'train_cfg.max_epochs=1',
                 'default_hooks.checkpoint.interval=1'], 75,
             needs='data-coco'),
        Step('train-upernet',
             'UperNet shapes demo, 20 iterations + val, fp16 (--amp, as '
             'the ADE20K recipe), compiled MSDA',
             tool('train.py') + [
                 os.path.join(SHAPES,
                              'upernet_vit-adapter-ti-mpvg_shapes-64x64.py'),
                 '--amp', '--work-dir', os.path.join(out, 'upernet'),
                 '--cfg-options', COMPILED_MSDA, 'train_cfg.max_iters=20',
                 'train_cfg.val_interval=20',
                 'default_hooks.checkpoint.interval=20'], 60,
             needs='data-ade20k'),
        Step('train-digits',
             'classification checkpoint: MPVG micro ViT on digits, 2 epochs',
             tool('train.py') + [
                 DIGITS, '--work-dir', os.path.join(out, 'digits'),
                 '--cfg-options', 'train_cfg.max_epochs=2',
                 'train_cfg.val_interval=2',
                 'default_hooks.checkpoint.interval=2'], 30),
        Step('test-amp', 'tools/test.py --amp (fp16 autocast) on it',
             tool('test.py') + [
                 DIGITS, os.path.join(out, 'digits', 'epoch_2.pth'),
                 '--amp', '--work-dir', os.path.join(out, 'digits-test')],
             25, needs='train-digits'),
        Step('benchmark-eager',
             'DeiT-Ti beside timm and mmpretrain: fp32/fp16/bf16, '
             'inference and train, eager',
             deit_benchmark(out, 'benchmark_eager', 'timm', 'mmpretrain',
                            'default-cls', 'mpvg'), 60),
        Step('benchmark-compiled',
             'the same, torch.compile, inference (compiled train steps '
             'would not fit the 8 minutes)',
             deit_benchmark(out, 'benchmark_compiled', 'timm', 'mmpretrain',
                            'mpvg', '--modes', 'inference', '--compile',
                            '--no-memory'), 80),
        Step('benchmark-adapter',
             'ViT-Adapter-Ti per PE method at 512 px; compiled MSDA vs '
             'PyTorch path',
             tool('benchmark_adapter.py') + [
                 '--device', 'cuda', '--img-size', '512', '--batch-size',
                 '2', '--rounds', '5', '--json',
                 os.path.join(out, 'benchmark_adapter.json')], 40,
             verify=lambda o: json_problem(
                 os.path.join(o, 'benchmark_adapter.json'),
                 'msda_compiled_op', 'measured')),
    ]


def environment() -> dict:
    """What the summary is about: the GPU, torch, CUDA and mmcv."""
    import torch
    env = dict(date=datetime.datetime.now().isoformat(timespec='seconds'),
               host=platform.node(), python=platform.python_version(),
               torch=torch.__version__, torch_cuda=torch.version.cuda,
               gpu=None, mmcv=None, mmcv_cuda_ops=None)
    if torch.cuda.is_available():
        env['gpu'] = torch.cuda.get_device_name(0)
        env['capability'] = '%d.%d' % torch.cuda.get_device_capability(0)
    try:
        import mmcv
        from mmcv.ops import get_compiling_cuda_version
        env['mmcv'] = mmcv.__version__
        env['mmcv_cuda_ops'] = get_compiling_cuda_version()
    except ImportError as error:
        env['mmcv'] = f'import failed: {error}'
    return env


def run_step(step: Step, out: str, failed: Sequence[str]) -> dict:
    log = os.path.join(out, f'{step.name}.log')
    result = dict(name=step.name, what=step.what,
                  command=shlex.join(step.argv), timeout_s=step.timeout_s,
                  log=log, seconds=0.0, problem=None)
    if step.needs in failed:
        return dict(result, status='not run',
                    problem=f'needs {step.needs}, which failed')
    env = dict(os.environ, PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join(
                   filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    start = time.perf_counter()
    with open(log, 'w') as f:
        try:
            code = subprocess.run(step.argv, cwd=out, env=env, stdout=f,
                                  stderr=subprocess.STDOUT,
                                  timeout=step.timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = None
    result['seconds'] = round(time.perf_counter() - start, 1)
    if code is None:
        return dict(result, status='failed',
                    problem=f'timed out after {step.timeout_s} s')
    if code:
        return dict(result, status='failed', returncode=code,
                    problem=f'exit code {code}; see {log}')
    problem = step.verify(out) if step.verify else None
    return dict(result, returncode=0, problem=problem,
                status='failed' if problem else 'passed')


def markdown(summary: dict) -> str:
    env = summary['environment']
    lines = [
        f"# GPU check, {env['date']}", '',
        f"{env['gpu']} (sm_{env.get('capability', '?').replace('.', '')}"
        f"), torch {env['torch']} (CUDA {env['torch_cuda']}), mmcv "
        f"{env['mmcv']} (CUDA ops: {env['mmcv_cuda_ops']}), Python "
        f"{env['python']}: **{summary['result']}** in "
        f"{summary['seconds']:.0f} s", '',
        '| step | result | seconds | what | problem |',
        '|---|---|---|---|---|']
    for r in summary['steps']:
        lines.append(f"| {r['name']} | {r['status']} | {r['seconds']:.0f} "
                     f"| {r['what']} | {r['problem'] or ''} |")
    return '\n'.join(lines) + '\n'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir', default=os.path.join(
        REPO, 'work_dirs', 'gpu_check'),
        help='logs, data, checkpoints and the summary (default: %(default)s)')
    parser.add_argument('--steps', nargs='+', metavar='NAME',
                        help='run only these steps (and what they need)')
    parser.add_argument('--dry-run', action='store_true',
                        help='list the commands and their time limits')
    args = parser.parse_args(argv)
    args.out_dir = os.path.abspath(args.out_dir)
    names = [s.name for s in plan(args.out_dir)]
    unknown = sorted(set(args.steps or ()) - set(names))
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; the steps: "
                     f"{', '.join(names)}")
    return args


def selected(steps: List[Step], names: Optional[Sequence[str]]):
    if not names:
        return steps
    wanted = set(names)
    for step in reversed(steps):
        if step.name in wanted and step.needs:
            wanted.add(step.needs)
    return [s for s in steps if s.name in wanted]


def main(argv=None) -> int:
    args = parse_args(argv)
    steps = selected(plan(args.out_dir), args.steps)
    if args.dry_run:
        for step in steps:
            print(f'# {step.name} (limit {step.timeout_s} s): {step.what}')
            print(shlex.join(step.argv))
        print(f'# {len(steps)} steps, at most '
              f'{sum(s.timeout_s for s in steps)} s (budget {BUDGET_S} s); '
              f'run in {args.out_dir}')
        return 0
    env = environment()
    if env['gpu'] is None:
        print(f"gpu_check: torch {env['torch']} sees no CUDA GPU; run this "
              'on a machine with one (and a CUDA build of torch).',
              file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.perf_counter()
    results, failed = [], []
    for step in steps:
        print(f'[gpu_check] {step.name}: {step.what}', flush=True)
        result = run_step(step, args.out_dir, failed)
        results.append(result)
        if result['status'] != 'passed':
            failed.append(step.name)
        print(f"[gpu_check] {step.name}: {result['status']} in "
              f"{result['seconds']} s {result['problem'] or ''}", flush=True)
    summary = dict(environment=env, result='failed' if failed else 'passed',
                   seconds=round(time.perf_counter() - start, 1),
                   steps=results)
    with open(os.path.join(args.out_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    table = markdown(summary)
    with open(os.path.join(args.out_dir, 'summary.md'), 'w') as f:
        f.write(table)
    print(table)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
