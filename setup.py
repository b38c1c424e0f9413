import atexit
import os
import os.path as osp
import re
import shutil
import sys
import tempfile

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = osp.dirname(osp.abspath(__file__))
# What `mim` reads from an installed package's mmmpvg/.mim/.
MIM_FILES = ('configs', 'tools', 'model-index.yml')
EDITABLE_COMMANDS = {'develop', 'editable_wheel'}


def link_mim_files():
    """Editable installs (legacy ``develop`` and PEP 660 ``editable_wheel``)
    see configs/ and tools/ through symlinks in mmmpvg/.mim/, so edits show
    through. OpenMMLab's usual setup.py links only under ``develop``, which
    modern pip no longer calls."""
    mim_dir = osp.join(ROOT, 'mmmpvg', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        dst = osp.join(mim_dir, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        os.symlink(osp.relpath(osp.join(ROOT, name), mim_dir), dst)


class BuildPyWithMimFiles(build_py):
    """Copies configs/, tools/ and model-index.yml into the build tree's
    mmmpvg/.mim/ for a wheel, leaving the source tree (and the links of an
    editable install in it) alone."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        mim_dir = osp.join(self.build_lib, 'mmmpvg', '.mim')
        os.makedirs(mim_dir, exist_ok=True)
        for name in MIM_FILES:
            src, dst = osp.join(ROOT, name), osp.join(mim_dir, name)
            if osp.isdir(src):
                shutil.copytree(
                    src, dst, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                shutil.copyfile(src, dst)


def scratch_build_dirs():
    """``build`` and ``egg_info`` options that put a non-editable build's
    intermediate files in a temporary folder, removed at exit: a stale
    ``build/lib`` would put files deleted since into the next wheel, and a
    wheel build must not rewrite the ``mmmpvg.egg-info`` that an editable
    install reads its metadata from."""
    scratch = tempfile.mkdtemp(prefix='mmmpvg-build-')
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return {'build': {'build_base': osp.join(scratch, 'build')},
            'egg_info': {'egg_base': scratch}}


def read_requirements(name):
    """Requirement lines of requirements/<name>.txt (comments dropped)."""
    with open(osp.join(ROOT, 'requirements', f'{name}.txt')) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


def get_version():
    with open(osp.join(ROOT, 'mmmpvg', '__init__.py')) as f:
        return re.search(r"^__version__ = '(.+)'$", f.read(), re.M).group(1)


if __name__ == '__main__':
    editable = bool(EDITABLE_COMMANDS & set(sys.argv))
    if editable:
        link_mim_files()
    extras = {name: read_requirements(name)
              for name in ('det', 'seg', 'deploy', 'docs', 'tests', 'mim')}
    extras['all'] = sorted({r for reqs in extras.values() for r in reqs})
    setup(
        name='mmmpvg',
        version=get_version(),
        description='MPVG: maximizing the position embedding for vision '
        'transformers with global average pooling, for OpenMMLab',
        long_description=open(osp.join(ROOT, 'README.md')).read(),
        long_description_content_type='text/markdown',
        license='Apache License 2.0',
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        python_requires='>=3.8',
        install_requires=read_requirements('runtime'),
        extras_require=extras,
        cmdclass={'build_py': BuildPyWithMimFiles},
        options={} if editable else scratch_build_dirs(),
        zip_safe=False)
