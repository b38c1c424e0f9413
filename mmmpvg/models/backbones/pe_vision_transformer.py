"""DeiT-style vision transformer whose position embedding method is a switch.

A thin subclass of mmpretrain's :class:`VisionTransformer` with its
parameter names (``patch_embed.projection``, ``cls_token``, ``pos_embed``,
``layers.{i}.ln1/attn/ln2/ffn``, the Last LN ``ln1``), so an mmpretrain
DeiT checkpoint of the Default model loads with a plain ``Pretrained``
``init_cfg``. Default / LaPE / PVG / MPVG (and every ablation between them)
differ only in the LN chain :meth:`build_pe` makes; the PE enters in
exactly two places: ``x + plan.to_input`` before layer 0 and
``attn(ln1(x) + pe)`` inside :class:`PETransformerLayer`.
"""
from typing import Optional

import torch
from mmengine.model import BaseModule
from mmpretrain.models.backbones.vision_transformer import (
    TransformerEncoderLayer, VisionTransformer)
from mmpretrain.registry import MODELS

from ..pe import PEBackboneMixin, PEBlockMixin, PEStage, add_pe


class PETransformerLayer(PEBlockMixin, TransformerEncoderLayer):
    """mmpretrain's pre-norm layer with ``attn(ln1(x) + pe)`` (Eq. 6, 9);
    no parameters of its own.

    The PE reaches q, k and v because they come from one projection of the
    same input. ``hw_shape`` goes to a window attention (the ViT-Adapter's)
    and is ignored otherwise.
    """

    def init_weights(self):
        # DeiT's initialisation (the config's TruncNormal for every Linear),
        # not mmpretrain's Xavier re-initialisation of the FFN.
        BaseModule.init_weights(self)

    def forward(self, x: torch.Tensor, hw_shape=None,
                pe: Optional[torch.Tensor] = None) -> torch.Tensor:
        attn_kwargs = dict(hw_shape=hw_shape) if getattr(
            self.attn, 'needs_hw_shape', False) else {}
        x = x + self.attn(add_pe(self.ln1(x), pe), **attn_kwargs)
        return self.ffn(self.ln2(x), identity=x)


@MODELS.register_module()
class PEVisionTransformer(PEBackboneMixin, VisionTransformer):
    """Vision transformer (DeiT family) with a configurable PE method.

    Args:
        arch (str | dict): ``'deit-tiny'``, ``'deit-small'``, ``'deit-base'``
            (or any other of mmpretrain's ViT ``arch_zoo``) or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads`` and
            ``feedforward_channels``.
        img_size (int | tuple): Training image size; the PE is stored at
            ``img_size // patch_size`` and resized for other inputs.
        patch_size (int): Patch size.
        in_channels (int): Image channels.
        global_pool (str): ``'cls'`` (class token) or ``'avg'`` (GAP over
            the patch tokens, no class token).
        pe_cfg (dict): ``dict(method='default'|'lape'|'pvg'|'mpvg', **knobs)``,
            see :mod:`mmmpvg.models.pe.methods`.
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
    OUTPUTS = ('pooled', 'featmap')
    # Before the contract the Last LN was ``last_norm``.
    legacy_keys = {'last_norm.': 'ln1.'}
    layer_class = PETransformerLayer

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
        if isinstance(arch, str) and arch.lower() not in self.arch_zoo:
            raise ValueError(f'Unknown arch {arch!r}; choose one of '
                             f'{sorted(self.arch_zoo)} or pass a dict.')
        if global_pool not in ('cls', 'avg'):
            raise ValueError(f"global_pool must be 'cls' or 'avg', got "
                             f'{global_pool!r}.')
        if out_type not in self.OUTPUTS:
            raise ValueError(f'out_type must be one of {self.OUTPUTS}, got '
                             f'{out_type!r}.')
        with_cls_token = global_pool == 'cls'
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            in_channels=in_channels,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            qkv_bias=qkv_bias,
            norm_cfg=norm_cfg,
            final_norm=True,
            # The pooling is this class's; 'featmap' builds no extra norm.
            out_type='cls_token' if with_cls_token else 'featmap',
            with_cls_token=with_cls_token,
            layer_scale_init_value=layer_scale_init_value,
            layer_cfgs=dict(attn_drop_rate=attn_drop_rate),
            init_cfg=init_cfg)
        self.global_pool = global_pool
        self.out_type = out_type
        self.patch_size = patch_size
        # Only forward changes: parameters, names and the rest are kept.
        for layer in self.layers:
            layer.__class__ = self.layer_class
        self.build_pe(pe_cfg, self.patch_resolution, norm_cfg,
                      pos_embed_init_std=pos_embed_init_std)

    def pe_stages(self):
        return [PEStage(self.layers, self.embed_dims)]

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
        return x.contiguous(), tuple(grid_size)

    def forward(self, x: torch.Tensor):
        x, grid_size = self.embed(x)
        x, plan = self.add_input_pe(x, grid_size)
        for layer, pe in zip(self.layers, plan.per_layer):
            x = layer(x, grid_size, pe)
        x = self.last_norm_with_pe(x, plan)
        if self.out_type == 'featmap':
            patches = x[:, self.num_extra_tokens:]
            return (patches.transpose(1, 2).reshape(
                x.shape[0], self.embed_dims, *grid_size).contiguous(), )
        if self.global_pool == 'cls':
            return (x[:, 0], )
        return (x.mean(dim=1), )
