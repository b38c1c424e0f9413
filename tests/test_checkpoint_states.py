"""Safe loading accepts every state MMEngine, mmpretrain, mmdet and mmseg
write, generated systematically (numpy arrays and scalars of every numeric
dtype and shape, empty ones included; message hubs with empty and filled
buffers; dataset meta; best scores; EMA state), and refuses every foreign
global, naming its type and the file."""
import argparse
import itertools
import os

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.model import ExponentialMovingAverage
from mmengine.runner.checkpoint import CheckpointLoader, save_checkpoint

from mmmpvg.engine import UnsafeCheckpointError
from mmmpvg.engine.checkpoint_loading import (NUMPY_DTYPE_CODES,
                                              WEIGHTS_ONLY_BY_DEFAULT)

SHAPES = [(), (0, ), (5, ), (2, 0), (2, 3)]
# What torch.amp.GradScaler('cpu').state_dict() holds (that scaler is
# torch >= 2.3).
GRAD_SCALER_STATE = dict(scale=65536.0, growth_factor=2.0, backoff_factor=0.5,
                         growth_interval=2000, _growth_tracker=0)
needs_allow_list = pytest.mark.skipif(
    not WEIGHTS_ONLY_BY_DEFAULT,
    reason='torch < 2.6 unpickles any object by default: no allow-list')


def numpy_values():
    """An array of every numeric dtype and shape, and a scalar of each."""
    for code, shape in itertools.product(NUMPY_DTYPE_CODES, SHAPES):
        yield f'array-{code}-{shape}', np.arange(
            int(np.prod(shape))).reshape(shape).astype(code)
    for code in NUMPY_DTYPE_CODES:
        yield f'scalar-{code}', np.dtype(code).type(1)


def message_hub_state():
    hub = MessageHub(f'hub-{os.getpid()}-{id(object())}')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/lr', np.float32(1e-3))
    hub.update_scalars({'val/top1': np.float64(71.2)})
    hub.log_scalars['empty'] = HistoryBuffer()
    hub.update_info('best_score', np.float64(73.51))
    hub.update_info('best_ckpt', '/tmp/best.pth')
    hub.update_info('dataset_meta', dict(
        classes=('background', 'disc', 'square'),
        palette=[(0, 0, 0), (255, 0, 0), (0, 255, 0)],
        label_map={0: 255}, reduce_zero_label=False))
    hub.update_info('iter', 12)
    return hub.state_dict()


def ema_state():
    model = torch.nn.Linear(3, 2)
    ema = ExponentialMovingAverage(model, momentum=0.0002)
    ema.update_parameters(model)
    return ema.state_dict()


def assert_same(a, b, where='checkpoint'):
    if isinstance(a, np.ndarray) or isinstance(a, np.generic):
        # longlong and int64 are one dtype but two scalar classes.
        assert isinstance(b, np.ndarray) == isinstance(a, np.ndarray), where
        assert a.dtype == b.dtype, where
        assert np.shape(a) == np.shape(b), where
        assert np.array_equal(a, b), where
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, HistoryBuffer):
        assert_same(a.data, b.data, where)
        assert a._statistics_methods.keys() == b._statistics_methods.keys()
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f'{where}[{key!r}]')
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


def save_and_load(state, path, writer):
    if writer == 'torch.save':
        torch.save(state, path)
    else:
        save_checkpoint(state, str(path))
    return CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


@pytest.mark.parametrize('writer', ['torch.save', 'mmengine.save_checkpoint'])
def test_every_numpy_dtype_and_shape_loads(tmp_path, writer):
    values = dict(numpy_values())
    # Empty buffers pickle their data through builtins.bytes (protocol 2).
    buffers = {f'buffer-{name}': HistoryBuffer([value], [1])
               for name, value in values.items()
               if isinstance(value, np.ndarray) and value.ndim == 1}
    state = dict(meta=dict(values=values, buffers=buffers),
                 state_dict=dict(w=torch.ones(2)))

    loaded = save_and_load(state, tmp_path / 'numpy.pth', writer)

    assert_same(state, loaded)


@pytest.mark.parametrize('writer', ['torch.save', 'mmengine.save_checkpoint'])
def test_runner_states_load(tmp_path, writer):
    """What the Runner writes around the model: message hub (empty and
    filled buffers, best score, dataset meta), EMA weights, AMP loss
    scaler, an lr scheduler."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10)
    state = dict(
        meta=dict(epoch=3, iter=12, seed=0, mmengine_version='0.10.7',
                  dataset_meta=dict(classes=('a', 'b')),
                  hook_msgs=dict(best_score=np.float64(0.5))),
        state_dict=model.state_dict(),
        ema_state_dict=ema_state(),
        optimizer=optimizer.state_dict(),
        param_schedulers=[scheduler.state_dict()],
        loss_scaler=GRAD_SCALER_STATE,
        message_hub=message_hub_state())

    loaded = save_and_load(state, tmp_path / 'runner.pth', writer)

    assert_same(state, loaded)


class RunsCode:

    def __reduce__(self):
        return os.system, ('echo pwned',)


FOREIGN = {
    'a __reduce__ that runs code': (RunsCode(), 'posix.system'),
    'a class from another module': (argparse.Namespace(lr=1e-3),
                                    'argparse.Namespace'),
    'a numpy object array': (np.array([1, 'a'], dtype=object),
                             'numpy.dtypes.ObjectDType'),
}


@needs_allow_list
@pytest.mark.parametrize('name', sorted(FOREIGN))
def test_foreign_globals_are_refused_with_type_and_file(tmp_path, name):
    value, type_name = FOREIGN[name]
    path = tmp_path / 'foreign.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(1)), meta=dict(x=value)),
               path)

    with pytest.raises(UnsafeCheckpointError) as error:
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')

    assert type_name in str(error.value)
    assert str(path) in str(error.value)
