"""Multi-scale deformable attention (Deformable DETR) for the ViT-Adapter.

The sampling itself is mmcv's: its compiled
``MultiScaleDeformableAttnFunction`` where that kernel exists (CUDA tensors
with a CUDA build of mmcv) and its ``multi_scale_deformable_attn_pytorch``
(``F.grid_sample``) everywhere else. The backend that runs is logged once per
device type; on CUDA without the compiled op, ``'auto'`` warns loudly that it
falls back to the slow PyTorch path.
mmcv's ``MultiScaleDeformableAttention`` module is not used because it adds
its own dropout and residual; ViT-Adapter's injector/extractor add their own.
"""
import logging
import math
from functools import lru_cache
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.ops.multi_scale_deform_attn import (
    MultiScaleDeformableAttnFunction, multi_scale_deformable_attn_pytorch)
from mmengine.logging import print_log
from mmengine.model import BaseModule

BACKENDS = ('auto', 'pytorch', 'compiled')


@lru_cache(maxsize=1)
def mmcv_has_cuda_ops() -> bool:
    """Whether this mmcv was built with its CUDA kernels."""
    from mmcv.ops import get_compiling_cuda_version
    return get_compiling_cuda_version() != 'not available'


def compiled_op_available(device: torch.device) -> bool:
    return device.type == 'cuda' and mmcv_has_cuda_ops()


def select_backend(backend: str, device: torch.device) -> str:
    """The backend (``'compiled'`` or ``'pytorch'``) that runs for tensors on
    ``device`` when ``backend`` is asked for; logged once per decision."""
    if backend not in BACKENDS:
        raise ValueError(f'Unknown deformable-attention backend {backend!r}; '
                         f'choose one of {BACKENDS}.')
    available = compiled_op_available(device)
    if backend == 'compiled' and not available:
        raise RuntimeError(
            "backend='compiled' needs CUDA tensors and an mmcv built with "
            f'CUDA ops (tensors are on {device}, mmcv CUDA ops: '
            f"{mmcv_has_cuda_ops()}); use backend='pytorch' or 'auto'.")
    chosen = 'compiled' if available and backend != 'pytorch' else 'pytorch'
    _log_backend(backend, chosen, device.type)
    return chosen


@lru_cache(maxsize=None)
def _log_backend(requested: str, chosen: str, device_type: str) -> None:
    if device_type == 'cuda' and chosen == 'pytorch' and requested == 'auto':
        print_log(
            'Multi-scale deformable attention: this mmcv has no compiled CUDA '
            "op (mmcv.ops.get_compiling_cuda_version() is 'not "
            "available'), so msda_backend='auto' falls back to the PyTorch "
            'path (F.grid_sample) on CUDA: much slower and more memory. '
            'Install an mmcv built with CUDA ops (e.g. mim install mmcv) or '
            "set msda_backend='pytorch' to silence this warning.",
            logger='current', level=logging.WARNING)
        return
    print_log(f'Multi-scale deformable attention runs the {chosen} backend '
              f'on {device_type} (msda_backend={requested!r}).',
              logger='current', level=logging.INFO)


def multi_scale_deformable_attention(
        value: torch.Tensor,
        spatial_shapes: Sequence[Tuple[int, int]],
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
        backend: str = 'auto',
        im2col_step: int = 64) -> torch.Tensor:
    """Sample ``value`` at the given locations and sum with the weights.

    Always computed in fp32, also under autocast (as ViT-Adapter's
    ``custom_fwd(cast_inputs=torch.float32)``): bilinear sampling of
    fractional offsets loses too much in half precision.

    Args:
        value: (bs, num_keys, num_heads, head_dims), levels concatenated.
        spatial_shapes: (h, w) of each level, in the order of ``value``.
        sampling_locations: (bs, num_queries, num_heads, num_levels,
            num_points, 2), normalised (x, y) in [0, 1].
        attention_weights: (bs, num_queries, num_heads, num_levels,
            num_points).
        backend: ``'compiled'`` (mmcv's kernel), ``'pytorch'`` or
            ``'auto'`` (compiled where available).
        im2col_step: Batch chunk of the compiled kernel.

    Returns:
        (bs, num_queries, num_heads * head_dims) in fp32.
    """
    use_compiled = select_backend(backend, value.device) == 'compiled'

    with torch.autocast(device_type=value.device.type, enabled=False):
        value = value.float()
        sampling_locations = sampling_locations.float()
        attention_weights = attention_weights.float()
        if not use_compiled:
            return multi_scale_deformable_attn_pytorch(
                value, spatial_shapes, sampling_locations, attention_weights)
        shapes = torch.as_tensor(
            spatial_shapes, dtype=torch.long, device=value.device)
        level_start_index = torch.cat(
            (shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
        return MultiScaleDeformableAttnFunction.apply(
            value, shapes, level_start_index, sampling_locations,
            attention_weights, im2col_step)


class MSDeformAttn(BaseModule):
    """Deformable attention of queries over a multi-level feature sequence.

    Args:
        embed_dims (int): Query/feature dimension.
        num_levels (int): Levels in the feature sequence.
        num_heads (int): Attention heads.
        num_points (int): Sampling points per head and level.
        value_ratio (float): ``value_proj`` width relative to ``embed_dims``
            (ViT-Adapter's ``deform_ratio``).
        backend (str): ``'auto'``, ``'pytorch'`` or ``'compiled'``, see
            :func:`multi_scale_deformable_attention`.
        im2col_step (int): Batch chunk of the compiled kernel.
    """

    def __init__(self,
                 embed_dims: int,
                 num_levels: int,
                 num_heads: int,
                 num_points: int,
                 value_ratio: float = 1.0,
                 backend: str = 'auto',
                 im2col_step: int = 64,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        value_dims = int(embed_dims * value_ratio)
        if value_dims % num_heads:
            raise ValueError(
                f'embed_dims * deform_ratio = {value_dims} is not divisible '
                f'by deform_num_heads={num_heads}.')
        if backend not in BACKENDS:
            raise ValueError(f'Unknown deformable-attention backend '
                             f'{backend!r}; choose one of {BACKENDS}.')
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.backend = backend
        self.im2col_step = im2col_step
        self.sampling_offsets = nn.Linear(
            embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(
            embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, value_dims)
        self.output_proj = nn.Linear(value_dims, embed_dims)

    def init_weights(self):
        """Deformable DETR's init: points start on rays around the reference
        point (one direction per head, 1..num_points steps) with uniform
        weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads) * (2 * math.pi / self.num_heads)
        directions = torch.stack([thetas.cos(), thetas.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True)[0]
        steps = torch.arange(1, self.num_points + 1, dtype=torch.float32)
        grid = directions[:, None, None, :] * steps[None, None, :, None]
        grid = grid.expand(-1, self.num_levels, -1, -1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor,
                feat: torch.Tensor,
                spatial_shapes: List[Tuple[int, int]]) -> torch.Tensor:
        """
        Args:
            query: (bs, num_queries, embed_dims).
            reference_points: (1 or bs, num_queries, 2), normalised (x, y).
            feat: (bs, sum(h * w), embed_dims), levels concatenated.
            spatial_shapes: (h, w) of each level of ``feat``.
        """
        if len(spatial_shapes) != self.num_levels:
            raise ValueError(f'{self.num_levels}-level attention got '
                             f'{len(spatial_shapes)} levels.')
        bs, num_queries, _ = query.shape
        value = self.value_proj(feat).view(bs, feat.shape[1], self.num_heads,
                                           -1)
        # Locations in fp32 also under autocast: bf16 rounds a location in
        # [0.5, 1) to 1/256 of the map, a quarter pixel at 1/8 of 1024 px.
        offsets = self.sampling_offsets(query).float().view(
            bs, num_queries, self.num_heads, self.num_levels, self.num_points,
            2)
        weights = self.attention_weights(query).view(
            bs, num_queries, self.num_heads, -1).softmax(-1).view(
                bs, num_queries, self.num_heads, self.num_levels,
                self.num_points)
        # Offsets are in pixels of each level; locations in [0, 1] (x, y).
        normalizer = offsets.new_tensor([(w, h) for h, w in spatial_shapes])
        locations = reference_points[:, :, None, None, None, :] + \
            offsets / normalizer[None, None, None, :, None, :]
        out = multi_scale_deformable_attention(
            value, spatial_shapes, locations, weights, self.backend,
            self.im2col_step)
        return self.output_proj(out.to(query.dtype))
