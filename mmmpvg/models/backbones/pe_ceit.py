"""CeiT (Yuan et al. 2021a) whose position embedding method is a switch.

CeiT = an Image-to-Tokens stem (conv 7x7/s2 + BN + maxpool, then a 4x4
patch projection), transformer layers whose MLP is the Locally-enhanced
Feed-Forward (LeFF: point-wise, depth-wise 3x3, point-wise convolutions on
the token grid) and the Layer-wise Class-token Attention (LCA) over the
per-layer class tokens. Structure and parameter names follow the official
``coeusguo/ceit`` model (see :func:`mmmpvg.models.converters.
convert_ceit_state_dict`); attention is mmpretrain's ``MultiheadAttention``.

PE methods (Table 1, CeiT-Ti rows): the layer-wise PE enters every layer at
``attn(ln1(x) + LN'_l(pos))``; LeFF is untouched.

* Default and LaPE keep the class token; LCA reads each layer's class token.
* PVG and MPVG have no class token (``global_pool='avg'``): LeFF reshapes
  all tokens to the grid, LCA reads each layer's token mean, and, as the
  paper does for Swin, layer 0 gets a PE LayerNorm too (the only structure
  among those with the table's counts that keeps "no class token" and the
  PVG rule "no PE LN at the LCA input", see configs/ceit/README.md).
  MPVG's Eq. 11 term ``LN''(pos_0)`` is pooled like the tokens (mean) and
  added to the normalised LCA output.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.drop import build_dropout
from mmcv.cnn.bricks.transformer import FFN, PatchEmbed
from mmengine.model import BaseModule, ModuleList
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import MultiheadAttention, to_2tuple
from mmpretrain.registry import MODELS

from ..pe import PEBackboneMixin, PEBlockMixin, PEStage, add_pe
from .official_init import init_linears_and_layer_norms


class ImageToTokens(BaseModule):
    """CeiT's I2T stem: low-level features at 1/4 of the image size."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=7,
                              stride=2, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    @staticmethod
    def output_size(size: int) -> int:
        """Feature size for an input of ``size`` (each step halves, rounding
        up)."""
        return math.ceil(math.ceil(size / 2) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.bn(self.conv(x)))


class LeFF(BaseModule):
    """Locally-enhanced Feed-Forward: convolutions on the patch-token grid.

    Tokens before the patches (the class token) pass through unchanged, as
    in the official code.
    """

    def __init__(self, embed_dims: int, feedforward_channels: int,
                 kernel_size: int = 3, act_cfg: dict = dict(type='GELU'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.conv1 = nn.Conv2d(embed_dims, feedforward_channels, 1)
        self.bn1 = nn.BatchNorm2d(feedforward_channels)
        self.conv2 = nn.Conv2d(
            feedforward_channels, feedforward_channels, kernel_size,
            padding=(kernel_size - 1) // 2, groups=feedforward_channels)
        self.bn2 = nn.BatchNorm2d(feedforward_channels)
        self.conv3 = nn.Conv2d(feedforward_channels, embed_dims, 1)
        self.bn3 = nn.BatchNorm2d(embed_dims)
        self.act = MODELS.build(act_cfg)

    def forward(self, x: torch.Tensor, grid_size: Tuple[int, int],
                num_extra_tokens: int = 0) -> torch.Tensor:
        extra, patches = x[:, :num_extra_tokens], x[:, num_extra_tokens:]
        batch_size, _, dims = patches.shape
        patches = patches.transpose(1, 2).reshape(batch_size, dims,
                                                  *grid_size)
        patches = self.act(self.bn1(self.conv1(patches)))
        patches = self.act(self.bn2(self.conv2(patches)))
        patches = self.bn3(self.conv3(patches))
        return torch.cat([extra, patches.flatten(2).transpose(1, 2)], dim=1)


class CeiTLayer(PEBlockMixin, BaseModule):
    """Pre-norm layer with LeFF: ``x + attn(ln1(x) + pe)``, then
    ``x + leff(ln2(x))``."""

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 feedforward_channels: int,
                 num_extra_tokens: int = 1,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 leff_kernel_size: int = 3,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.num_extra_tokens = num_extra_tokens
        self.ln1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = MultiheadAttention(
            embed_dims=embed_dims,
            num_heads=num_heads,
            attn_drop=attn_drop_rate,
            proj_drop=drop_rate,
            dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate),
            qkv_bias=qkv_bias)
        self.ln2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.leff = LeFF(embed_dims, feedforward_channels, leff_kernel_size)
        self.drop_path = build_dropout(
            dict(type='DropPath', drop_prob=drop_path_rate))

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int],
                pe: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``hw_shape``: the token grid, on which LeFF convolves."""
        x = x + self.attn(add_pe(self.ln1(x), pe))
        return x + self.drop_path(
            self.leff(self.ln2(x), hw_shape, self.num_extra_tokens))


class LastTokenAttention(MultiheadAttention):
    """Multi-head attention whose only query is the last token (LCA).

    Same ``qkv``/``proj`` parameters as the parent; the query uses the first
    third of ``qkv``, keys and values the rest.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_size, num_tokens, _ = x.shape
        dims = self.embed_dims
        weight, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(x[:, -1:], weight[:dims],
                     None if bias is None else bias[:dims])
        kv = F.linear(x, weight[dims:], None if bias is None else bias[dims:])
        q = q.reshape(batch_size, 1, self.num_heads,
                      self.head_dims).transpose(1, 2)
        k, v = kv.reshape(batch_size, num_tokens, 2, self.num_heads,
                          self.head_dims).permute(2, 0, 3, 1, 4)
        attn_drop = self.attn_drop if self.training else 0.
        x = self.scaled_dot_product_attention(q, k, v, dropout_p=attn_drop)
        x = self.proj(x.transpose(1, 2).reshape(batch_size, 1, dims))
        return self.out_drop(self.gamma1(self.proj_drop(x)))


class LayerwiseClassAttention(BaseModule):
    """LCA: the last layer's token attends over all layers' tokens.

    ``y = t_L + attn(ln1(t_1..t_L))``, then ``y + mlp(ln2(y))``; no drop
    path (as the official code).
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 feedforward_channels: int,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.ln1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = LastTokenAttention(
            embed_dims=embed_dims,
            num_heads=num_heads,
            attn_drop=attn_drop_rate,
            proj_drop=drop_rate,
            qkv_bias=qkv_bias)
        self.ln2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = FFN(
            embed_dims=embed_dims,
            feedforward_channels=feedforward_channels,
            num_fcs=2,
            ffn_drop=drop_rate,
            act_cfg=dict(type='GELU'))

    def forward(self, layer_tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, C) per-layer tokens -> (B, 1, C)."""
        x = layer_tokens[:, -1:] + self.attn(self.ln1(layer_tokens))
        return self.ffn(self.ln2(x), identity=x)


@MODELS.register_module()
class PECeiT(PEBackboneMixin, BaseBackbone):
    """CeiT with Default / LaPE / PVG / MPVG position embedding.

    Args:
        arch (str | dict): ``'ceit-tiny'``, ``'ceit-small'``, ``'ceit-base'``
            or a dict with ``embed_dims``, ``num_layers``, ``num_heads`` and
            ``feedforward_channels``.
        img_size (int | tuple): Training image size; the PE is stored for
            its token grid (``img_size / 4 / patch_size``).
        patch_size (int): Patch size on the I2T features (4: 16 pixels).
        in_channels (int): Image channels.
        stem_channels (int): Channels of the I2T features.
        global_pool (str): ``'cls'``: LCA over the per-layer class tokens
            (official CeiT); ``'avg'``: no class token, LCA over the
            per-layer token means (PVG/MPVG).
        pe_cfg (dict): ``dict(method='default'|'lape'|'pvg'|'mpvg', **knobs)``,
            see :mod:`mmmpvg.models.pe.methods`; PVG and MPVG put a
            PE LayerNorm in layer 0 too.
        drop_rate, attn_drop_rate, drop_path_rate (float): Regularisation.
        qkv_bias (bool): Bias in the qkv projections (CeiT: True).
        leff_kernel_size (int): Depth-wise kernel of LeFF.
        norm_cfg (dict): LayerNorm config (eps 1e-6 as in CeiT).
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny', 'ceit-tiny'], dict(
            embed_dims=192, num_layers=12, num_heads=3,
            feedforward_channels=768)),
        **dict.fromkeys(['s', 'small', 'ceit-small'], dict(
            embed_dims=384, num_layers=12, num_heads=6,
            feedforward_channels=1536)),
        **dict.fromkeys(['b', 'base', 'ceit-base'], dict(
            embed_dims=768, num_layers=12, num_heads=12,
            feedforward_channels=3072)),
    }
    pe_preset_overrides = dict(pvg=dict(include_layer0=True),
                               mpvg=dict(include_layer0=True))
    last_norm_name = 'last_norm'
    # The Last LN normalises the LCA output, one token per image.
    last_norm_sees_tokens = False
    embedding_prefixes = ('stem.', 'patch_embed.', 'cls_token')

    def __init__(self,
                 arch='ceit-tiny',
                 img_size=224,
                 patch_size: int = 4,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 global_pool: str = 'cls',
                 pe_cfg: Optional[dict] = None,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 leff_kernel_size: int = 3,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise ValueError(f'Unknown arch {arch!r}; choose one of '
                                 f'{sorted(self.arch_zoo)} or pass a dict.')
            arch = self.arch_zoo[arch.lower()]
        if global_pool not in ('cls', 'avg'):
            raise ValueError(f"global_pool must be 'cls' or 'avg', got "
                             f'{global_pool!r}.')
        self.embed_dims = arch['embed_dims']
        self.num_layers = arch['num_layers']
        self.global_pool = global_pool
        self.patch_size = patch_size
        self.img_size = to_2tuple(img_size)
        grid_size = self._grid_size(self.img_size)

        self.stem = ImageToTokens(in_channels, stem_channels)
        self.patch_embed = PatchEmbed(
            in_channels=stem_channels,
            embed_dims=self.embed_dims,
            conv_type='Conv2d',
            kernel_size=patch_size,
            stride=patch_size,
            bias=True)
        self.num_extra_tokens = 1 if global_pool == 'cls' else 0
        self.cls_token = nn.Parameter(torch.zeros(
            1, 1, self.embed_dims)) if global_pool == 'cls' else None
        self.drop_after_pos = nn.Dropout(p=drop_rate)

        dpr = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.layers = ModuleList([
            CeiTLayer(
                embed_dims=self.embed_dims,
                num_heads=arch['num_heads'],
                feedforward_channels=arch['feedforward_channels'],
                num_extra_tokens=self.num_extra_tokens,
                drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate,
                drop_path_rate=dpr[i],
                qkv_bias=qkv_bias,
                leff_kernel_size=leff_kernel_size,
                norm_cfg=norm_cfg) for i in range(self.num_layers)
        ])
        self.lca = LayerwiseClassAttention(
            embed_dims=self.embed_dims,
            num_heads=arch['num_heads'],
            feedforward_channels=arch['feedforward_channels'],
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            qkv_bias=qkv_bias,
            norm_cfg=norm_cfg)
        # The LCA's own (layer-index) PE; not a method knob
        # (configs/ceit/README.md).
        self.pos_layer_embed = nn.Parameter(
            torch.zeros(1, self.num_layers, self.embed_dims))
        self.last_norm = build_norm_layer(norm_cfg, self.embed_dims)[1]
        self.build_pe(pe_cfg, grid_size, norm_cfg)

    def pe_stages(self):
        return [PEStage(self.layers, self.embed_dims)]

    def _grid_size(self, img_size: Sequence[int]) -> Tuple[int, int]:
        features = [ImageToTokens.output_size(s) for s in img_size]
        if any(f % self.patch_size for f in features):
            raise ValueError(
                f'Input size {img_size[0]}x{img_size[1]} gives '
                f'{features[0]}x{features[1]} I2T features, not divisible by '
                f'the patch size {self.patch_size}: use a multiple of '
                f'{4 * self.patch_size}.')
        return tuple(f // self.patch_size for f in features)

    def init_backbone_weights(self):
        """The official init; convolutions and BN keep PyTorch's defaults
        (the PE and class token get the contract's)."""
        init_linears_and_layer_norms(self)

    def forward(self, x: torch.Tensor):
        self._grid_size(x.shape[-2:])
        x, grid_size = self.patch_embed(self.stem(x))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        x, plan = self.add_input_pe(x, grid_size)

        layer_tokens = []
        for layer, pe in zip(self.layers, plan.per_layer):
            x = layer(x, grid_size, pe)
            layer_tokens.append(
                x[:, 0] if self.cls_token is not None else x.mean(dim=1))
        z = self.lca(torch.stack(layer_tokens, dim=1) + self.pos_layer_embed)
        z = self.last_norm(z[:, 0])
        if plan.to_last_norm is not None:
            # Eq. 11 after pooling: the PE term pooled like the tokens.
            z = z + plan.to_last_norm.mean(dim=1)
        return (z, )
