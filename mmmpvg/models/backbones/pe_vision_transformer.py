"""DeiT-style vision transformer whose position embedding method is a switch.

Default / LaPE / PVG / MPVG (and every ablation between them) differ only in
the :class:`LayerwisePositionEmbedding` they build; the transformer itself is
shared. PE enters in exactly two places: ``x + plan.to_input`` before layer 0
and ``attn(ln1(x) + pe)`` inside :class:`PETransformerLayer`.
"""
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, PatchEmbed
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import MultiheadAttention, to_2tuple
from mmpretrain.registry import MODELS

from ..position_embedding import LayerwisePositionEmbedding


class PETransformerLayer(BaseModule):
    """Pre-norm transformer layer that can take a PE at the attention input.

    ``attn(ln1(x) + pe)`` (Eq. 6, 9): the PE reaches q, k and v because they
    come from one projection of the same input. ``layer_scale_init_value > 0``
    adds layer-scale gammas to both branches as mmpretrain's
    TransformerEncoderLayer (``attn.gamma1``, ``ffn.gamma2``); 0 (DeiT) builds
    none.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 feedforward_channels: int,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 act_cfg: dict = dict(type='GELU'),
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 layer_scale_init_value: float = 0.,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.ln1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = MultiheadAttention(
            embed_dims=embed_dims,
            num_heads=num_heads,
            attn_drop=attn_drop_rate,
            proj_drop=drop_rate,
            dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate),
            qkv_bias=qkv_bias,
            layer_scale_init_value=layer_scale_init_value)
        self.ln2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = FFN(
            embed_dims=embed_dims,
            feedforward_channels=feedforward_channels,
            num_fcs=2,
            ffn_drop=drop_rate,
            dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate),
            act_cfg=act_cfg,
            layer_scale_init_value=layer_scale_init_value)

    def forward(self, x: torch.Tensor, pe: Optional[torch.Tensor] = None,
                **attn_kwargs) -> torch.Tensor:
        """``attn_kwargs`` go to the attention (e.g. the token grid of a
        window attention)."""
        attn_in = self.ln1(x)
        if pe is not None:
            attn_in = attn_in + pe
        x = x + self.attn(attn_in, **attn_kwargs)
        return self.ffn(self.ln2(x), identity=x)


@MODELS.register_module()
class PEVisionTransformer(BaseBackbone):
    """Vision transformer (DeiT family) with a configurable PE method.

    Args:
        arch (str | dict): ``'deit-tiny'``, ``'deit-small'``, ``'deit-base'``
            or a dict with ``embed_dims``, ``num_layers``, ``num_heads`` and
            ``feedforward_channels``.
        img_size (int | tuple): Training image size; the PE is stored at
            ``img_size // patch_size`` and resized for other inputs.
        patch_size (int): Patch size.
        in_channels (int): Image channels.
        global_pool (str): ``'cls'`` (class token) or ``'avg'`` (GAP over
            the patch tokens, no class token).
        pe_cfg (dict): ``dict(method='default'|'lape'|'pvg'|'mpvg', **knobs)``,
            see :mod:`mmmpvg.models.position_embedding`.
        out_type (str): ``'pooled'`` gives (B, C) for a classifier head,
            ``'featmap'`` the normalised patch tokens as (B, C, h, w).
        drop_rate, attn_drop_rate, drop_path_rate (float): Regularisation.
        qkv_bias (bool): Bias in the qkv projection (DeiT: True).
        norm_cfg (dict): LayerNorm config (eps 1e-6 as in DeiT).
        layer_scale_init_value (float): Layer-scale gammas of every layer
            (0 = none, as DeiT).
        pos_embed_init_std (float): Std of the truncated-normal init of the
            PE (DeiT: 0.02). Short schedules need a PE on the scale of the
            patch tokens, or the PE added to the input learns too slowly.
    """
    arch_zoo = {
        **dict.fromkeys(['deit-t', 'deit-tiny'], dict(
            embed_dims=192, num_layers=12, num_heads=3,
            feedforward_channels=768)),
        **dict.fromkeys(['deit-s', 'deit-small'], dict(
            embed_dims=384, num_layers=12, num_heads=6,
            feedforward_channels=1536)),
        **dict.fromkeys(['deit-b', 'deit-base'], dict(
            embed_dims=768, num_layers=12, num_heads=12,
            feedforward_channels=3072)),
    }
    OUT_TYPES = ('pooled', 'featmap')

    def __init__(self,
                 arch='deit-tiny',
                 img_size=224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 global_pool: str = 'avg',
                 pe_cfg: Optional[dict] = None,
                 out_type: str = 'pooled',
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 layer_scale_init_value: float = 0.,
                 pos_embed_init_std: float = 0.02,
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
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'out_type must be one of {self.OUT_TYPES}, got '
                             f'{out_type!r}.')
        self.embed_dims = arch['embed_dims']
        self.num_layers = arch['num_layers']
        self.global_pool = global_pool
        self.out_type = out_type
        self.patch_size = patch_size
        self.pos_embed_init_std = pos_embed_init_std
        self.img_size = to_2tuple(img_size)
        grid_size = tuple(s // patch_size for s in self.img_size)

        self.patch_embed = PatchEmbed(
            in_channels=in_channels,
            embed_dims=self.embed_dims,
            conv_type='Conv2d',
            kernel_size=patch_size,
            stride=patch_size,
            bias=True)
        self.num_extra_tokens = 1 if global_pool == 'cls' else 0
        self.cls_token = nn.Parameter(torch.zeros(
            1, 1, self.embed_dims)) if global_pool == 'cls' else None
        self.pe = LayerwisePositionEmbedding(
            grid_size=grid_size,
            embed_dims=self.embed_dims,
            num_layers=self.num_layers,
            num_extra_tokens=self.num_extra_tokens,
            pe_cfg=pe_cfg,
            norm_cfg=norm_cfg)
        self.drop_after_pos = nn.Dropout(p=drop_rate)

        dpr = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.layers = ModuleList([
            PETransformerLayer(
                embed_dims=self.embed_dims,
                num_heads=arch['num_heads'],
                feedforward_channels=arch['feedforward_channels'],
                drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate,
                drop_path_rate=dpr[i],
                qkv_bias=qkv_bias,
                norm_cfg=norm_cfg,
                layer_scale_init_value=layer_scale_init_value)
            for i in range(self.num_layers)
        ])
        self.last_norm = build_norm_layer(norm_cfg, self.embed_dims)[1]

    def init_weights(self):
        # Own init first: a Pretrained init_cfg (dict, list, or the
        # classifier's) loads afterwards and keeps its weights.
        if not self._is_init:
            trunc_normal_(self.pe.pos_embed, std=self.pos_embed_init_std)
            if self.cls_token is not None:
                trunc_normal_(self.cls_token, std=0.02)
        super().init_weights()

    def train(self, mode: bool = True):
        # mmpretrain's BaseBackbone.train() returns None; nn.Module's
        # contract (``m = model.eval()``, ``torch.compile(model.eval())``)
        # expects the module itself.
        super().train(mode)
        return self

    def embed(self, x: torch.Tensor):
        """Patch tokens (with class token) and the patch grid size."""
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f'Input size {h}x{w} is not divisible by the patch size '
                f'{self.patch_size}: resize or pad the image.')
        x, grid_size = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        # PatchEmbed returns a transposed view (token stride 1); without the
        # class token's cat nothing copies it, every residual add keeps that
        # layout and each LayerNorm gathers it again (GAP ran slower).
        return x.contiguous(), grid_size

    def forward(self, x: torch.Tensor):
        batch_size = x.shape[0]
        x, grid_size = self.embed(x)
        plan = self.pe(grid_size)
        if plan.to_input is not None:
            x = x + plan.to_input
        x = self.drop_after_pos(x)
        for layer, pe in zip(self.layers, plan.per_layer):
            x = layer(x, pe)
        # The "Last LN"; MPVG adds LN''(pos_k) to its output (Eq. 11).
        x = self.last_norm(x)
        if plan.to_last_norm is not None:
            x = x + plan.to_last_norm

        if self.out_type == 'featmap':
            patches = x[:, self.num_extra_tokens:]
            return (patches.transpose(1, 2).reshape(
                batch_size, self.embed_dims, *grid_size).contiguous(), )
        if self.global_pool == 'cls':
            return (x[:, 0], )
        return (x.mean(dim=1), )

    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """Layer depth for mmpretrain's layer-wise lr decay constructor.

        Embeddings are depth 0, layer i (with the PE norm feeding it) is
        depth i + 1, the Last LN, its PE norm and the head come last.
        """
        num_depths = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_depths - 1, num_depths
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pe.pos_embed') or \
                name.startswith('patch_embed'):
            return 0, num_depths
        for layer_prefix in ('layers.', 'pe.layer_norms.'):
            if name.startswith(layer_prefix):
                layer = int(name[len(layer_prefix):].split('.')[0])
                return layer + 1, num_depths
        return num_depths - 1, num_depths
