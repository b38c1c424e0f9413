"""Where ``pos_0`` comes from, and the one function that resizes it.

A family keeps ``pos_0`` under its upstream name (``pos_embed``, Swin's
``absolute_pos_embed``); :func:`build_pos_embed` makes it from a source:

* ``'learnable'``: a trained parameter (DeiT, Swin, CeiT, ViT-Lite);
* ``'sinusoidal'``: T2T-ViT's fixed sine/cosine table, a frozen parameter
  (T2T-ViT counts it in #Params).

:func:`resize_pos_embed` is used at forward time (another input size) and on
load (a checkpoint of another grid), so both give the same tensor.
"""
import math
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmpretrain.models.utils import resize_pos_embed

POS_SOURCES = ('learnable', 'sinusoidal')

__all__ = ['POS_SOURCES', 'build_pos_embed', 'resize_pos_embed',
           'resize_loaded_pos_embed', 'sinusoid_table']


def sinusoid_table(num_positions: int, dims: int) -> torch.Tensor:
    """The fixed 1-D sine/cosine table of Vaswani et al. (T2T-ViT's PE),
    (1, num_positions, dims): computed in float64 and cast once, as the
    official numpy code does."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    channel = torch.arange(dims, dtype=torch.float64)
    angle = position / torch.pow(10000., 2 * torch.div(
        channel, 2, rounding_mode='floor') / dims)
    table = torch.where(channel % 2 == 0, angle.sin(), angle.cos())
    return table.float()[None]


def build_pos_embed(source: str, num_tokens: int,
                    dims: int) -> nn.Parameter:
    """``pos_0`` as a (1, num_tokens, dims) parameter of ``source``."""
    if source == 'learnable':
        return nn.Parameter(torch.zeros(1, num_tokens, dims))
    if source == 'sinusoidal':
        return nn.Parameter(sinusoid_table(num_tokens, dims),
                            requires_grad=False)
    raise ValueError(f'Unknown pos_source {source!r}; choose one of '
                     f'{POS_SOURCES}.')


def resize_loaded_pos_embed(loaded: torch.Tensor, key: str,
                            target_shape: Sequence[int],
                            grid_size: Tuple[int, int],
                            num_extra_tokens: int,
                            mode: str) -> torch.Tensor:
    """A checkpoint's ``pos_0`` resized to the model's grid, as timm and
    mmpretrain do on load (logged); one clear error for a tensor no grid
    explains."""
    rows = loaded.shape[1] - num_extra_tokens if loaded.dim() == 3 else -1
    side = math.isqrt(max(rows, 0))
    if loaded.dim() != 3 or loaded.shape[2] != target_shape[2] \
            or side * side != rows:
        raise ValueError(
            f'{key} in the checkpoint has shape {tuple(loaded.shape)}, '
            f'which is no square patch grid with {num_extra_tokens} '
            f'class-token row(s) and {target_shape[2]} dims as this model '
            f'needs ({tuple(target_shape)}): was it trained with another '
            'pooling (class token vs GAP) or width? Convert it with the '
            'converter of its family in tools/model_converters/.')
    print_log(f'Resized {key} from a {side}x{side} to a {grid_size[0]}x'
              f'{grid_size[1]} grid ({mode}).', logger='current')
    return resize_pos_embed(loaded, (side, side), grid_size, mode=mode,
                            num_extra_tokens=num_extra_tokens)
