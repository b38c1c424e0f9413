import os
import os.path as osp
import re
import shutil
import sys

from setuptools import find_packages, setup

MIM_FILES = ('configs', 'tools', 'model-index.yml')


def add_mim_extension():
    """Expose configs/ and tools/ as mmmpvg/.mim/ the way `mim` looks them up.

    Editable installs (legacy ``develop`` and PEP 660 ``editable_wheel``,
    which modern pip uses) get symlinks, so edits show through; wheels get
    copies. OpenMMLab's usual setup.py only links under ``develop``, which
    pip no longer calls.
    """
    editable = {'develop', 'editable_wheel'} & set(sys.argv)
    if not editable and not {'bdist_wheel', 'install', 'build'} & set(sys.argv):
        return
    root = osp.dirname(osp.abspath(__file__))
    mim_dir = osp.join(root, 'mmmpvg', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(root, name), osp.join(mim_dir, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if editable:
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)


def get_version():
    with open(osp.join('mmmpvg', '__init__.py')) as f:
        return re.search(r"^__version__ = '(.+)'$", f.read(), re.M).group(1)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmmpvg',
        version=get_version(),
        description='MPVG: maximizing the position embedding for vision '
        'transformers with global average pooling, for OpenMMLab',
        long_description=open('README.md').read(),
        long_description_content_type='text/markdown',
        license='Apache License 2.0',
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        include_package_data=True,
        package_data={'mmmpvg': ['.mim/**/*']},
        python_requires='>=3.8',
        install_requires=['mmengine>=0.10.0,<1.0.0', 'mmpretrain>=1.2.0'],
        extras_require={
            'det': ['mmdet>=3.3.0'],
            'seg': ['mmsegmentation>=1.2.2', 'ftfy', 'regex'],
            # tools/deployment and tools/analysis/get_flops.py
            'deploy': ['onnx>=1.16', 'onnxruntime>=1.17', 'fvcore'],
            'docs': ['sphinx>=7', 'myst-parser>=3', 'furo'],  # docs/en
        },
        zip_safe=False)
