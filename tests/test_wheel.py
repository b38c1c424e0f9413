"""The package as a user installs it: a wheel built in a clone with an
editable install leaves that install alone, and the wheel, installed with
the dependencies it declares into a fresh venv, trains and tests through
``mim`` from outside the clone.

The fresh venv reuses what is on this machine instead of downloading it
again: the torch of the running interpreter (its installed files linked in
through a ``.pth`` file, so that pip counts torch as installed) and the mmcv
wheel that tools/setup_env.sh built and cached. Everything else comes from
the package index, at the versions the declared ranges resolve to."""
import glob
import importlib.metadata
import json
import os
import os.path as osp
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
MIM_FILES = ('configs', 'tools', 'model-index.yml')
CONFIG = 'deit-tiny_mpvg_4xb256_in1k.py'
# Run in the dev tree and in the fresh venv: every module mmmpvg registers,
# per registry; and where mmmpvg was imported from.
REGISTERED = '''
import importlib, json, pkgutil
import mmmpvg


def registered():
    for info in pkgutil.walk_packages(mmmpvg.__path__, 'mmmpvg.'):
        importlib.import_module(info.name)
    from mmengine.registry import Registry
    found = {}
    for scope in ('mmengine', 'mmpretrain', 'mmdet', 'mmseg'):
        module = importlib.import_module(f'{scope}.registry')
        for attr, registry in vars(module).items():
            if isinstance(registry, Registry):
                names = sorted(
                    name for name, obj in registry.module_dict.items()
                    if obj.__module__.startswith('mmmpvg.'))
                if names:
                    found[f'{scope}.{attr}'] = names
    return found


if __name__ == '__main__':
    print(json.dumps(dict(file=mmmpvg.__file__, registered=registered())))
'''


def run(cmd, **kwargs):
    result = subprocess.run([str(c) for c in cmd], capture_output=True,
                            text=True, **kwargs)
    assert result.returncode == 0, (
        f'{cmd}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}')
    return result


def build_wheel(source, dist):
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
         '--no-build-isolation', '--disable-pip-version-check', '-q', '-w',
         dist, source], timeout=600)
    (wheel, ) = dist.glob('mmmpvg-*.whl')
    return wheel


def test_wheel_built_in_a_clone_leaves_its_editable_install_alone(
        tmp_path):
    clone = tmp_path / 'clone'
    files = run(['git', 'ls-files', '-co', '--exclude-standard'],
                cwd=REPO).stdout.split()
    for name in files:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, clone / name)
    # What an editable install leaves in the clone: the links mim reads and
    # the metadata the egg-link points at. And a build/ from an old build.
    mim_dir = clone / 'mmmpvg' / '.mim'
    mim_dir.mkdir()
    for name in MIM_FILES:
        (mim_dir / name).symlink_to(f'../../{name}')
    (clone / 'mmmpvg.egg-info').mkdir()
    (clone / 'mmmpvg.egg-info' / 'PKG-INFO').write_text('editable\n')
    (clone / 'build' / 'lib' / 'mmmpvg').mkdir(parents=True)
    (clone / 'build' / 'lib' / 'mmmpvg' / 'removed_since.py').touch()
    before = sorted(p.relative_to(clone).as_posix()
                    for p in clone.rglob('*'))

    wheel = build_wheel(clone, tmp_path / 'dist')

    for name in MIM_FILES:
        assert os.readlink(mim_dir / name) == f'../../{name}'
    assert (clone / 'mmmpvg.egg-info' / 'PKG-INFO').read_text() == \
        'editable\n'
    assert sorted(p.relative_to(clone).as_posix()
                  for p in clone.rglob('*')) == before
    listing = run([sys.executable, '-m', 'zipfile', '-l', wheel]).stdout
    assert 'mmmpvg/.mim/tools/train.py' in listing
    assert f'mmmpvg/.mim/configs/deit/{CONFIG}' in listing
    assert 'mmmpvg/.mim/model-index.yml' in listing
    assert 'removed_since' not in listing
    assert 'tests/' not in listing


def torch_on_disk(overlay):
    """``overlay/``: links to the installed files of torch, torchvision and
    everything they require, as this interpreter has them."""
    overlay.mkdir()
    todo, seen = [('torch', ()), ('torchvision', ())], set()
    while todo:
        name, extras = todo.pop()
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed
        key = (dist.metadata['Name'].lower(), extras)
        if key in seen:
            continue
        seen.add(key)
        site = pathlib.Path(dist.locate_file(''))
        for top in {pathlib.PurePath(f).parts[0] for f in dist.files}:
            if top != '..' and not (overlay / top).exists():
                (overlay / top).symlink_to(site / top)
        # torch's CUDA libraries come through extras (cuda-toolkit[cudart]).
        for line in dist.requires or ():
            requirement = Requirement(line)
            if requirement.marker is None or any(
                    requirement.marker.evaluate({'extra': extra})
                    for extra in ('', *extras)):
                todo.append((requirement.name, tuple(requirement.extras)))
    return overlay


def cached_mmcv_wheel():
    cache = os.environ.get('MMMPVG_WHEEL_CACHE',
                           osp.expanduser('~/.cache/mmmpvg/wheels'))
    tag = torch.__version__.replace('+', '_')
    wheels = sorted(glob.glob(osp.join(cache, f'mmcv-*-torch{tag}-*',
                                       'mmcv-*.whl')))
    if not wheels:
        pytest.skip(f'no mmcv wheel built for torch {torch.__version__} in '
                    f'{cache}: tools/setup_env.sh builds and caches it')
    return wheels[0]


@pytest.mark.install
def test_wheel_installs_with_its_dependencies_and_runs_through_mim(
        tmp_path):
    mmcv_wheel = cached_mmcv_wheel()
    wheel = build_wheel(REPO, tmp_path / 'dist')
    venv = tmp_path / 'venv'
    run([sys._base_executable, '-m', 'venv', venv], timeout=300)
    python, mim = venv / 'bin' / 'python', venv / 'bin' / 'mim'
    # From a folder outside the clone, with nothing of the clone on the
    # path: pip would take the clone's mmmpvg.egg-info (on the path through
    # PYTHONPATH or the working directory) as mmmpvg already installed.
    outside = tmp_path / 'user'
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(OMP_NUM_THREADS='1', PATH=f'{venv / "bin"}:{env["PATH"]}')

    def in_venv(*cmd, timeout=600):
        return run(cmd, cwd=outside, env=env, timeout=timeout)

    site = in_venv(python, '-c', 'import sysconfig; '
                   'print(sysconfig.get_paths()["purelib"])').stdout.strip()
    (pathlib.Path(site) / 'torch_on_disk.pth').write_text(
        f'{torch_on_disk(tmp_path / "torch_on_disk")}\n')
    in_venv(python, '-m', 'pip', 'install', '--disable-pip-version-check',
            '-q', mmcv_wheel, f'{wheel}[det,seg,mim]', timeout=1200)
    in_venv(python, '-m', 'pip', 'check')

    (outside / 'registered.py').write_text(REGISTERED)
    installed = json.loads(in_venv(python, 'registered.py').stdout)
    assert installed['file'].startswith(site)
    namespace = {'__name__': 'registered'}
    exec(REGISTERED, namespace)
    assert installed['registered'] == namespace['registered']()

    in_venv(mim, 'run', 'mmmpvg', 'make_smoke_data', 'smoke_data')
    in_venv(mim, 'train', 'mmmpvg', CONFIG, '--gpus', '0', '--work-dir',
            'train', '--smoke', '--smoke-data', 'smoke_data')
    (log, ) = (outside / 'train').glob('*/vis_data/scalars.json')
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s['step'] for s in steps if 'loss' in s] == [1, 2]
    in_venv(mim, 'test', 'mmmpvg', CONFIG, '--checkpoint',
            'train/epoch_2.pth', '--gpus', '0', '--work-dir', 'test',
            '--smoke', '--smoke-data', 'smoke_data', '--out-item',
            'metrics', '--out', 'metrics.json')
    metrics = json.loads((outside / 'metrics.json').read_text())
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0
