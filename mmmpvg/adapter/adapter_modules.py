"""Building blocks of ViT-Adapter (Chen et al., ICLR 2023).

The spatial prior module (a conv stem) gives features at 1/8, 1/16 and 1/32
of the image; injectors let the ViT tokens (1/16) attend to them and
extractors let them attend back to the ViT tokens, both with multi-scale
deformable attention.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule, ModuleList

from .ms_deform_attn import MSDeformAttn

Shapes = List[Tuple[int, int]]


def reference_points(shapes: Sequence[Tuple[int, int]],
                     device: torch.device) -> torch.Tensor:
    """Pixel centres of each level as normalised (x, y): (1, sum h*w, 2)."""
    points = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h,
            (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w,
            indexing='ij')
        points.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), -1))
    return torch.cat(points)[None]


def tokens_to_maps(tokens: torch.Tensor, shapes: Shapes) -> List[torch.Tensor]:
    """Split (B, sum h*w, C) level tokens into contiguous (B, C, h, w) maps.

    Contiguous as ViT-Adapter makes them: a transposed view would carry its
    channels-last strides through the up-sampling and the output norms into
    the detector, and mmcv's RoIAlign reads its input as contiguous NCHW
    whatever its strides, so every RoI feature would be scrambled.
    """
    chunks = tokens.split([h * w for h, w in shapes], dim=1)
    return [
        chunk.transpose(1, 2).reshape(tokens.shape[0], -1, h, w).contiguous()
        for chunk, (h, w) in zip(chunks, shapes)
    ]


def maps_to_tokens(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


class SpatialPriorModule(BaseModule):
    """Conv stem giving (c1 map at 1/4, [c2, c3, c4] maps at 1/8-1/32), all
    projected to ``embed_dims``."""

    def __init__(self,
                 in_channels: int = 3,
                 inplanes: int = 64,
                 embed_dims: int = 384,
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)

        def conv3x3(cin, cout, stride):
            return ConvModule(cin, cout, 3, stride=stride, padding=1,
                              norm_cfg=norm_cfg, act_cfg=dict(type='ReLU'))

        self.stem = nn.Sequential(
            conv3x3(in_channels, inplanes, 2), conv3x3(inplanes, inplanes, 1),
            conv3x3(inplanes, inplanes, 1),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.conv2 = conv3x3(inplanes, 2 * inplanes, 2)
        self.conv3 = conv3x3(2 * inplanes, 4 * inplanes, 2)
        self.conv4 = conv3x3(4 * inplanes, 4 * inplanes, 2)
        self.fc1, self.fc2, self.fc3, self.fc4 = (
            nn.Conv2d(c, embed_dims, kernel_size=1)
            for c in (inplanes, 2 * inplanes, 4 * inplanes, 4 * inplanes))

    def forward(self, x: torch.Tensor):
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        return self.fc1(c1), [self.fc2(c2), self.fc3(c3), self.fc4(c4)]


class ConvFFN(BaseModule):
    """FFN with a 3x3 depth-wise conv (shared by all levels) after fc1."""

    def __init__(self, embed_dims: int, hidden_dims: int, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.dwconv = nn.Conv2d(hidden_dims, hidden_dims, 3, padding=1,
                                groups=hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, shapes: Shapes) -> torch.Tensor:
        x = self.fc1(x)
        x = maps_to_tokens([self.dwconv(m) for m in tokens_to_maps(x, shapes)])
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


class NormedDeformAttention(BaseModule):
    """Multi-scale deformable attention of normalised queries over
    normalised features, what the injector and the extractor share.

    Args:
        embed_dims, num_heads, num_points, num_levels: of the attention.
        deform_ratio (float): Value-projection width ratio.
        ln_cfg (dict): The two LayerNorms.
        msda_backend (str): ``'auto'``, ``'pytorch'`` or ``'compiled'``.
        with_cp (bool): Gradient checkpointing of the whole module.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 num_points: int,
                 num_levels: int,
                 deform_ratio: float = 1.0,
                 ln_cfg: dict = dict(type='LN', eps=1e-6),
                 msda_backend: str = 'auto',
                 with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.query_norm = build_norm_layer(ln_cfg, embed_dims)[1]
        self.feat_norm = build_norm_layer(ln_cfg, embed_dims)[1]
        self.attn = MSDeformAttn(embed_dims, num_levels, num_heads,
                                 num_points, deform_ratio, msda_backend)

    def attend(self, query: torch.Tensor, ref_points: torch.Tensor,
               feat: torch.Tensor, feat_shapes: Shapes) -> torch.Tensor:
        return self.attn(self.query_norm(query), ref_points,
                         self.feat_norm(feat), feat_shapes)

    def forward(self, query: torch.Tensor, *args) -> torch.Tensor:
        if self.with_cp and query.requires_grad:
            return cp.checkpoint(self._forward, query, *args,
                                 use_reentrant=False)
        return self._forward(query, *args)


class Injector(NormedDeformAttention):
    """ViT tokens attend to the spatial-prior features:
    ``x + gamma * attn(norm(x), norm(c))``; ``forward(x, c, ref_points,
    c_shapes)``. Other arguments: :class:`NormedDeformAttention`."""

    def __init__(self, embed_dims: int, num_heads: int, num_points: int,
                 num_levels: int = 3, init_values: float = 0., **kwargs):
        super().__init__(embed_dims, num_heads, num_points, num_levels,
                         **kwargs)
        self.gamma = nn.Parameter(init_values * torch.ones(embed_dims))

    def _forward(self, x, c, ref_points, c_shapes):
        return x + self.gamma * self.attend(x, ref_points, c, c_shapes)


class Extractor(NormedDeformAttention):
    """Spatial-prior features attend to the ViT tokens, then a conv-FFN:
    ``c = c + attn(norm(c), norm(x)); c = c + drop_path(cffn(norm(c)))``;
    ``forward(c, x, ref_points, c_shapes, x_shape)``. Other arguments:
    :class:`NormedDeformAttention`."""

    def __init__(self, embed_dims: int, num_heads: int, num_points: int,
                 with_cffn: bool = True, cffn_ratio: float = 0.25,
                 drop: float = 0., drop_path: float = 0.,
                 ln_cfg: dict = dict(type='LN', eps=1e-6), **kwargs):
        super().__init__(embed_dims, num_heads, num_points, 1,
                         ln_cfg=ln_cfg, **kwargs)
        if with_cffn:
            self.ffn_norm = build_norm_layer(ln_cfg, embed_dims)[1]
            self.ffn = ConvFFN(embed_dims, int(embed_dims * cffn_ratio), drop)
            self.drop_path = DropPath(drop_path) if drop_path > 0 \
                else nn.Identity()
        else:
            self.ffn = None

    def _forward(self, c, x, ref_points, c_shapes, x_shape):
        c = c + self.attend(c, ref_points, x, [x_shape])
        if self.ffn is not None:
            c = c + self.drop_path(self.ffn(self.ffn_norm(c), c_shapes))
        return c


class InteractionBlock(BaseModule):
    """One injector before a run of ViT layers and one extractor after it
    (plus ``num_extra_extractors`` more, ViT-Adapter uses 2 in the last
    block). The ViT layers themselves belong to the ViT."""

    def __init__(self,
                 embed_dims: int,
                 num_heads: int = 6,
                 num_points: int = 4,
                 deform_ratio: float = 1.0,
                 init_values: float = 0.,
                 with_cffn: bool = True,
                 cffn_ratio: float = 0.25,
                 drop: float = 0.,
                 drop_path: float = 0.,
                 num_extra_extractors: int = 0,
                 ln_cfg: dict = dict(type='LN', eps=1e-6),
                 msda_backend: str = 'auto',
                 with_cp: bool = False):
        super().__init__()
        common = dict(embed_dims=embed_dims, num_heads=num_heads,
                      num_points=num_points, deform_ratio=deform_ratio,
                      ln_cfg=ln_cfg, msda_backend=msda_backend,
                      with_cp=with_cp)
        self.injector = Injector(init_values=init_values, **common)
        self.extractors = ModuleList([
            Extractor(with_cffn=with_cffn, cffn_ratio=cffn_ratio, drop=drop,
                      drop_path=drop_path, **common)
            for _ in range(1 + num_extra_extractors)
        ])

    def extract(self, c: torch.Tensor, x: torch.Tensor,
                ref_points: torch.Tensor, c_shapes: Shapes,
                x_shape: Tuple[int, int]) -> torch.Tensor:
        for extractor in self.extractors:
            c = extractor(c, x, ref_points, c_shapes, x_shape)
        return c
