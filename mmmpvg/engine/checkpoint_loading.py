"""Load MMEngine checkpoints on torch >= 2.6 with ``weights_only`` left on.

Since torch 2.6, ``torch.load`` unpickles only tensors and plain containers
unless told otherwise. A checkpoint written by MMEngine's Runner also holds
its MessageHub: ``HistoryBuffer`` objects (which pickle their statistics
methods as ``getattr(HistoryBuffer, name)``) with numpy arrays, dtypes and
scalars. mmengine 0.10.7 therefore cannot resume, ``load_from`` or test its
own checkpoints.

We allow exactly those types, only while one of MMEngine's checkpoint loaders
runs, and turn any other pickled object into an :class:`UnsafeCheckpointError`
that names the offending type and file. The list follows how pickle writes
them, not which checkpoints we happened to see: ``torch.save`` uses protocol
2, where an ndarray's data is ``_codecs.encode(str, 'latin1')`` (allowed by
torch) except for empty data, which is ``builtins.bytes()``.
"""
import contextlib
import functools
import os.path as osp
import pickle
import re
import zipfile

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = [
    'MMENGINE_CHECKPOINT_GLOBALS', 'NUMPY_DTYPE_CODES',
    'UnsafeCheckpointError',
    'DamagedCheckpointError', 'WEIGHTS_ONLY_BY_DEFAULT', 'checkpoint_damage',
    'written_by_torch_save',
    'mmengine_checkpoint_globals', 'install_checkpoint_allowlist'
]

# The statistics HistoryBuffer registers for itself; custom ones registered
# by user code are functions defined elsewhere and stay refused.
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')

# Every boolean and numeric numpy dtype (HistoryBuffer arrays, metric
# values such as best_score); unpickling a dtype builds an instance of its
# class. Object, string and void dtypes stay refused: they carry arbitrary
# Python objects or layouts no MMEngine state needs.
NUMPY_DTYPE_CODES = '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds a pickled object outside the MMEngine allow-list."""


class DamagedCheckpointError(RuntimeError):
    """A checkpoint file is truncated or corrupt."""


def checkpoint_damage(path: str):
    """Why ``path`` is not a complete checkpoint, or None if it is.

    ``torch.save`` writes a zip archive whose members carry CRCs, so a
    truncated or corrupted file is found without unpickling it.
    """
    if not osp.isfile(path):
        return 'the file does not exist'
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f'not a complete torch checkpoint ({error})'
    return f'member {bad} is corrupt' if bad else None


# torch.save writes a zip archive; before torch 1.6 (and with
# _use_new_zipfile_serialization=False) a pickle that opens with its magic
# number under pickle protocol 2.
_ZIP_HEADER = b'PK\x03\x04'
_LEGACY_TORCH_HEADER = pickle.dumps(torch.serialization.MAGIC_NUMBER,
                                    protocol=2)[:-1]


def written_by_torch_save(path: str) -> bool:
    """Whether the local file ``path`` starts as ``torch.save``'s output
    (it may still be cut short)."""
    with open(path, 'rb') as f:
        head = f.read(len(_LEGACY_TORCH_HEADER))
    return head.startswith(_ZIP_HEADER) or head == _LEGACY_TORCH_HEADER


def _history_buffer_statistic(owner, name):
    """``getattr`` restricted to the statistics methods of HistoryBuffer."""
    if owner is not HistoryBuffer or name not in _HISTORY_BUFFER_STATISTICS:
        raise pickle.UnpicklingError(
            f'getattr({owner!r}, {name!r}) is not part of an MMEngine '
            'checkpoint')
    return getattr(owner, name)


def _numpy_globals():
    # numpy 2 (and numpy 1.26's shim of it) has numpy._core; older numpy
    # only numpy.core. The attribute alone is not enough: 1.26 does not
    # import numpy._core.multiarray until asked.
    try:
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray
    dtype_classes = {type(np.dtype(code)) for code in NUMPY_DTYPE_CODES}
    allowed = [np.ndarray, np.dtype, *sorted(dtype_classes, key=str)]
    # numpy 2 pickles under numpy._core, numpy 1 under numpy.core: accept
    # checkpoints written with either.
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        allowed += [(multiarray._reconstruct, f'{module}._reconstruct'),
                    (multiarray.scalar, f'{module}.scalar')]
    return allowed


MMENGINE_CHECKPOINT_GLOBALS = [
    HistoryBuffer,
    (_history_buffer_statistic, 'builtins.getattr'),
    bytes,  # the data of an empty ndarray under pickle protocol 2
    *_numpy_globals(),
]


# Before torch 2.6, torch.load unpickles any object by default (MMEngine's
# loaders do not ask for weights_only), so there is nothing to allow; the
# allow-list API itself is torch >= 2.4, its (object, name) form >= 2.5.
WEIGHTS_ONLY_BY_DEFAULT = torch.__version__ >= (2, 6)


@contextlib.contextmanager
def mmengine_checkpoint_globals():
    """Let ``torch.load(weights_only=True)`` read MMEngine checkpoints.

    The allow-list is active only inside the block; safe globals registered
    by others before it stay registered after it. A no-op before torch 2.6.
    """
    if not WEIGHTS_ONLY_BY_DEFAULT:
        yield
        return
    before = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


def _foreign_globals(filename, error):
    """Names of the pickled globals that made ``torch.load`` refuse."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:  # not a local zip checkpoint (URL, legacy format)
        names = []
    if not names:
        names = re.findall(r'GLOBAL (\S+) was not an allowed global',
                           str(error))
    if not names:
        names = re.findall(r"but got (<class '[^']+'>)", str(error))
    return sorted(set(names))


def _refusal_message(filename, error):
    names = _foreign_globals(filename, error)
    if not names:
        detail = str(error).split('WeightsUnpickler error:')[-1].strip()
        return f'Refusing to load checkpoint {filename}: {detail}'
    return (
        f'Refusing to load checkpoint {filename}: it holds pickled '
        f'object(s) of type {", ".join(names)}, which MMEngine checkpoints '
        'do not contain, and unpickling them could run arbitrary code. '
        'Allowed are tensors, containers, HistoryBuffer and numpy '
        'arrays/scalars (mmmpvg.engine.MMENGINE_CHECKPOINT_GLOBALS). If you '
        'trust its source, extract the weights once with an unrestricted '
        'torch.load and save them as a plain state_dict.')


def _refuse_foreign_objects(loader):
    """Wrap a CheckpointLoader scheme: allow-list on, clear refusals."""

    @functools.wraps(loader)
    def load(filename, map_location):
        if osp.isfile(filename) and not written_by_torch_save(filename):
            raise DamagedCheckpointError(
                f'Cannot read checkpoint {filename}: it is not a file '
                'torch.save wrote (neither a zip archive nor the legacy '
                'pickle format). Check the path, or download or copy the '
                'checkpoint again.')
        with mmengine_checkpoint_globals():
            try:
                return loader(filename, map_location)
            except UnsafeCheckpointError:
                raise
            except pickle.UnpicklingError as error:
                raise UnsafeCheckpointError(
                    _refusal_message(filename, error)) from error
            except (RuntimeError, EOFError, OSError) as error:
                damage = checkpoint_damage(filename) \
                    if osp.isfile(filename) else None
                if damage is None:
                    raise
                raise DamagedCheckpointError(
                    f'Cannot read checkpoint {filename}: {damage}. It was '
                    'probably cut short while being written or copied; use '
                    'an earlier checkpoint.') from error

    load.mmengine_allowlist = True
    return load


def install_checkpoint_allowlist():
    """Guard every registered CheckpointLoader scheme (idempotent).

    The Runner's ``resume``, ``load_from`` and ``Pretrained`` init all load
    through these schemes (local files, URLs, ``open-mmlab://``, ...).
    """
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if not getattr(loader, 'mmengine_allowlist', False):
            CheckpointLoader.register_scheme(
                prefix, _refuse_foreign_objects(loader), force=True)
