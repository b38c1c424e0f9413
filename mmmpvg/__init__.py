__version__ = '0.1.0'

from . import engine  # noqa: E402,F401  (guards MMEngine's checkpoint loading)
