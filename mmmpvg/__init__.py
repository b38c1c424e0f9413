import importlib.util

__version__ = '0.1.0'

if importlib.util.find_spec('mmcv') is None:
    raise ImportError(
        'mmmpvg needs mmcv 2.0 or 2.1 with its compiled ops, which pip does '
        'not install with it (PyPI has only its sources). Install it with '
        '`mim install "mmcv>=2.0.0,<2.2.0"` where OpenMMLab publishes a '
        'wheel for your torch and CUDA, else build it as '
        'tools/setup_env.sh does (docs/en/get_started.md).')

from . import engine  # noqa: E402,F401  (guards MMEngine's checkpoint loading)
