"""Mixed precision with ``--amp`` on CUDA and on CPU.

Training: mmengine's AmpOptimWrapper refuses to start without an
accelerator, while CPU autocast itself works in bfloat16. bfloat16 has
float32's exponent range, so gradients need no loss scaling there.
Testing: MMEngine's TestLoop runs under autocast with ``fp16=True``.
"""
import logging
from contextlib import contextmanager

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from mmengine.runner.amp import autocast

__all__ = ['CPUAmpOptimWrapper', 'enable_amp', 'enable_test_amp']

_AMP_COMPATIBLE_WRAPPERS = ('OptimWrapper', 'AmpOptimWrapper',
                            'CPUAmpOptimWrapper')


def check_cpu_autocast(cfg):
    """Refuse what cannot run under CPU bfloat16 autocast; warn where it
    runs but slowly.

    mmcv's CPU nms has no bfloat16 kernel, and every mmdet detector here
    runs nms (the RPN's proposals, in training too). bf16 autocast pays off
    on CPUs with bf16 instructions (AVX512-BF16, AMX); elsewhere oneDNN
    emulates them: a DeiT-Ti forward ran 8x slower than in float32 on an
    AVX2-only machine (docs/en/user_guides/train_test.md).
    """
    if cfg.get('default_scope') == 'mmdet':
        raise ValueError(
            "--amp on CPU: mmcv's CPU nms has no bfloat16 kernel (\"expected "
            'scalar type Float but found BFloat16\"), so mmdet detectors '
            'cannot run under CPU autocast. Run without --amp, or on CUDA '
            '(float16).')
    if torch.cpu._is_avx512_bf16_supported() or \
            torch.cpu._is_amx_tile_supported():
        return
    print_log(
        '--amp: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX); '
        'bf16 autocast is emulated here and slower than float32.',
        logger='current', level=logging.WARNING)


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """OptimWrapper that runs forward and loss under CPU bfloat16 autocast.

    Args:
        dtype (str | torch.dtype): Autocast dtype; CPU autocast supports
            only ``'bfloat16'``.
        loss_scale: Ignored (bfloat16 needs no loss scaling); accepted so
            that a CUDA fp16 config (``AmpOptimWrapper`` with a
            ``loss_scale``) runs on CPU by changing only its ``type``.
        **kwargs: Arguments of :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self, dtype='bfloat16', loss_scale=None, **kwargs):
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if dtype != torch.bfloat16:
            raise ValueError(
                f'CPU autocast supports only bfloat16, got dtype={dtype}')
        super().__init__(**kwargs)
        self.cast_dtype = dtype

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), autocast(
                device_type='cpu', dtype=self.cast_dtype):
            yield


def enable_amp(cfg):
    """Switch ``cfg.optim_wrapper`` to mixed precision for this machine.

    CUDA: MMEngine's AmpOptimWrapper with dynamic loss scaling (a ``dtype``
    in the config, e.g. ``'bfloat16'``, is kept). CPU: CPUAmpOptimWrapper in
    bfloat16.
    """
    wrapper = cfg.optim_wrapper
    kind = wrapper.get('type', 'OptimWrapper')
    if kind not in _AMP_COMPATIBLE_WRAPPERS:
        raise ValueError(
            f'--amp needs optim_wrapper.type to be one of '
            f'{_AMP_COMPATIBLE_WRAPPERS}, but the config has {kind!r}')
    if torch.cuda.is_available():
        wrapper.type = 'AmpOptimWrapper'
        wrapper.setdefault('loss_scale', 'dynamic')
    else:
        wrapper.type = 'CPUAmpOptimWrapper'
        wrapper.pop('loss_scale', None)
        wrapper.dtype = 'bfloat16'
        check_cpu_autocast(cfg)
    return cfg


def enable_test_amp(cfg):
    """Run ``cfg``'s test loop under autocast (``tools/test.py --amp``).

    MMEngine's TestLoop with ``fp16=True`` enters its ``autocast`` on the
    current device: float16 on CUDA (torch's default GPU autocast type),
    bfloat16 on CPU (the only CPU one). Linear layers, convolutions and
    attention compute in that type, and the activations after them stay in
    it (on CPU LayerNorm and softmax too); weights stay float32.
    """
    loop = dict(cfg.get('test_cfg') or {})
    kind = loop.get('type', 'TestLoop')
    if kind != 'TestLoop':
        raise ValueError(
            f'--amp needs test_cfg.type to be TestLoop (its fp16 switch), '
            f'but the config has {kind!r}')
    if not torch.cuda.is_available():
        check_cpu_autocast(cfg)
    loop['fp16'] = True
    cfg.test_cfg = loop
    return cfg
