"""The offline wheel bundle for a GPU machine (tools/build_gpu_bundle.sh).

    python tools/gpu_bundle.py check DIR [--limit-mib 64]
    python tools/gpu_bundle.py missing PIP_REPORT.json DIR

``check``: only wheels (the target has no compiler and no network), one
version of each project, this stack's projects all present, mmcv with its
CUDA kernels, at most ``--limit-mib`` together. ``missing``: from
``pip install --dry-run --report`` in a venv that has what the target has,
the ``name==version`` of each project to download (those not in DIR yet).
"""
import argparse
import json
import os
import sys
import zipfile
from typing import Dict, List

REQUIRED = ('mmcv', 'mmengine', 'mmdet', 'mmsegmentation', 'mmpretrain',
            'mmmpvg')
LIMIT_MIB = 64
# Defined only in mmcv's CUDA sources: a CPU build lacks it.
CUDA_SYMBOL = b'ms_deform_attn_cuda_forward'


def canonical(name: str) -> str:
    return name.lower().replace('_', '-').replace('.', '-')


def wheel_project(filename: str) -> str:
    """The project a wheel file holds (``name-version-...-tags.whl``)."""
    return canonical(filename.split('-')[0])


def has_cuda_kernels(wheel: str) -> bool:
    with zipfile.ZipFile(wheel) as archive:
        return any(CUDA_SYMBOL in archive.read(name)
                   for name in archive.namelist()
                   if name.startswith('mmcv/_ext') and '.so' in name)


def check(folder: str, limit_mib: float = LIMIT_MIB) -> Dict:
    """Sizes and problems of the bundle in ``folder``."""
    files = sorted(os.listdir(folder))
    sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in files}
    problems = [f'{f}: not a wheel; pip install --no-index would have to '
                'build it' for f in files if not f.endswith('.whl')]
    projects: Dict[str, List[str]] = {}
    for f in files:
        if f.endswith('.whl'):
            projects.setdefault(wheel_project(f), []).append(f)
    problems += [f"{name}: {len(found)} wheels ({', '.join(found)}); keep "
                 'one' for name, found in projects.items() if len(found) > 1]
    problems += [f'{name}: no wheel' for name in REQUIRED
                 if name not in projects]
    for wheel in projects.get('mmcv', [])[:1]:
        if not has_cuda_kernels(os.path.join(folder, wheel)):
            problems.append(f'{wheel}: built without CUDA ops (no '
                            f'{CUDA_SYMBOL.decode()} in mmcv/_ext)')
    total = sum(sizes.values())
    if total > limit_mib * 2**20:
        problems.append(f'{total / 2**20:.1f} MiB in all, over the '
                        f'{limit_mib:g} MiB limit')
    return dict(folder=folder, total_bytes=total, limit_mib=limit_mib,
                sizes=sizes, problems=problems)


def missing(report: Dict, folder: str) -> List[str]:
    """``name==version`` of every project pip would install that has no
    wheel in ``folder`` yet."""
    present = {wheel_project(f) for f in os.listdir(folder)}
    wanted = []
    for item in report['install']:
        meta = item['metadata']
        if canonical(meta['name']) not in present:
            wanted.append(f"{meta['name']}=={meta['version']}")
    return sorted(wanted)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    check_parser = commands.add_parser('check')
    check_parser.add_argument('folder')
    check_parser.add_argument('--limit-mib', type=float, default=LIMIT_MIB)
    missing_parser = commands.add_parser('missing')
    missing_parser.add_argument('report')
    missing_parser.add_argument('folder')
    args = parser.parse_args(argv)
    if args.command == 'missing':
        with open(args.report) as f:
            print('\n'.join(missing(json.load(f), args.folder)))
        return 0
    result = check(args.folder, args.limit_mib)
    for name, size in sorted(result['sizes'].items(), key=lambda x: -x[1]):
        print(f'{size / 2**20:8.2f} MiB  {name}')
    print(f"{result['total_bytes'] / 2**20:8.2f} MiB  in all "
          f"({len(result['sizes'])} files; limit {args.limit_mib:g} MiB)")
    for problem in result['problems']:
        print(f'problem: {problem}', file=sys.stderr)
    return 1 if result['problems'] else 0


if __name__ == '__main__':
    sys.exit(main())
