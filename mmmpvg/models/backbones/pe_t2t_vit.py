"""T2T-ViT whose position embedding method is a switch (Tables 1 and 2).

A thin subclass of mmpretrain's :class:`T2T_ViT` with its parameter names
(``tokens_to_token``, ``encoder.{i}.ln1/attn.qkv/...``, ``norm``), plus the
Performer Tokens-to-Token stem the official T2T-ViT-7 uses (mmpretrain has
only the transformer stem) and the PE plan. The PE is T2T's frozen
sinusoidal table by default (``pos_source='learnable'`` trains it instead);
it is stored as a frozen parameter, as the official code counts it. The
layer-wise methods add ``LN'_l(pos_l)`` to ``ln1(x)`` of the main blocks,
never inside the Tokens-to-Token stem.
"""
import math
from functools import partial
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.models.backbones.t2t_vit import (T2T_ViT, T2TModule,
                                                 T2TTransformerLayer)
from mmpretrain.models.utils import to_2tuple
from mmpretrain.registry import MODELS

from ..pe import PEBackboneMixin, PEBlockMixin, PEStage, add_pe


class TokenPerformer(BaseModule):
    """One Performer layer of the Tokens-to-Token stem (single head).

    Linear attention with positive random features (Choromanski et al.),
    as in official T2T-ViT's ``Token_performer``: the value path is the
    residual (``v + proj(attn)``), since the layer changes the width from
    ``input_dims`` to ``embed_dims``. ``w`` holds the random features: a
    frozen parameter, so it is saved with the model and counted in #Params
    as in the official code.

    Args:
        input_dims (int): Width of the incoming (soft-split) tokens.
        embed_dims (int): Width of the output tokens (``token_dims``).
        kernel_ratio (float): Random features per embedding dimension.
        drop_rate (float): Dropout after ``proj`` and after the MLP; the
            official stem always uses 0.1.
    """
    eps = 1e-8  # keeps the normaliser away from zero

    def __init__(self,
                 input_dims: int,
                 embed_dims: int,
                 kernel_ratio: float = 0.5,
                 drop_rate: float = 0.1,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.norm1 = nn.LayerNorm(input_dims)
        self.kqv = nn.Linear(input_dims, 3 * embed_dims)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.attn_drop = nn.Dropout(drop_rate)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dims, embed_dims), nn.GELU(),
            nn.Linear(embed_dims, embed_dims), nn.Dropout(drop_rate))
        num_features = int(embed_dims * kernel_ratio)
        features = nn.init.orthogonal_(torch.empty(num_features, embed_dims))
        self.w = nn.Parameter(
            features * math.sqrt(num_features), requires_grad=False)

    def random_features(self, x: torch.Tensor) -> torch.Tensor:
        """``exp(w x - |x|^2 / 2) / sqrt(m)``: E[phi(q) phi(k)] = exp(q.k)."""
        x = x.float()
        projected = x @ self.w.t()
        half_norm = x.pow(2).sum(-1, keepdim=True) / 2
        return torch.exp(projected - half_norm) / math.sqrt(self.w.shape[0])

    def linear_attention(self, q: torch.Tensor, k: torch.Tensor,
                         v: torch.Tensor) -> torch.Tensor:
        """``phi(q) (phi(k)^T v) / (phi(q) sum_n phi(k_n))``, in fp32 even
        under AMP: ``w.x - |x|^2 / 2`` is a difference of large terms that
        half precision would round before the exp."""
        with torch.autocast(v.device.type, enabled=False):
            k_feat, q_feat = self.random_features(k), self.random_features(q)
            normaliser = q_feat @ k_feat.sum(dim=1).unsqueeze(-1)  # (B, N, 1)
            context = k_feat.transpose(1, 2) @ v.float()  # (B, m, C)
            return (q_feat @ context) / (normaliser + self.eps)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        k, q, v = self.kqv(x).split(self.embed_dims, dim=-1)
        out = self.linear_attention(q, k, v)
        return v + self.attn_drop(self.proj(out.to(v.dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PerformerT2TModule(T2TModule):
    """mmpretrain's Tokens-to-Token module with the Performer layers.

    mmpretrain builds the transformer stem only; its soft splits, forward
    and ``project`` are kept, ``attention1/2`` become Performers.
    """

    def __init__(self,
                 img_size: int = 224,
                 in_channels: int = 3,
                 embed_dims: int = 384,
                 token_dims: int = 64,
                 kernel_ratio: float = 0.5,
                 init_cfg=None):
        super().__init__(img_size=img_size, in_channels=in_channels,
                         embed_dims=embed_dims, token_dims=token_dims,
                         use_performer=False, init_cfg=init_cfg)
        self.attention1 = TokenPerformer(in_channels * 7 * 7, token_dims,
                                         kernel_ratio)
        self.attention2 = TokenPerformer(token_dims * 3 * 3, token_dims,
                                         kernel_ratio)


def fix_attention_scale(attn: nn.Module, scale: float):
    """Make mmpretrain's ``MultiheadAttention`` multiply q.k by ``scale``.

    mmpretrain 1.2.0 ignores a given ``qk_scale`` and *divides* the logits
    by ``head_dims ** -0.5`` (64x too sharp for T2T-ViT-7's blocks), and its
    ``T2TTransformerLayer`` always passes ``qk_scale``.
    """
    attn.scaled_dot_product_attention = partial(
        F.scaled_dot_product_attention, scale=scale)


class PET2TTransformerLayer(PEBlockMixin, T2TTransformerLayer):
    """T2T block with ``attn(ln1(x) + pe)``; no parameters of its own."""

    def forward(self, x: torch.Tensor, hw_shape=None,
                pe: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(add_pe(self.ln1(x), pe))
        return self.ffn(self.ln2(x), identity=x)


@MODELS.register_module()
class PET2TViT(PEBackboneMixin, T2T_ViT):
    """T2T-ViT with Default / LaPE / PVG / MPVG position embedding.

    Args:
        arch (str | dict): ``'t2t-vit-7'`` (alias ``'7'``), ``'t2t-vit-10'``,
            ``'t2t-vit-12'``, ``'t2t-vit-14'`` or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads`` and
            ``feedforward_channels``.
        pe_cfg (dict): ``dict(method='default'|'lape'|'pvg'|'mpvg', **knobs)``,
            see :mod:`mmmpvg.models.pe.methods`. PVG and MPVG need
            ``with_cls_token=False, out_type='avg_featmap'``.
        pos_source (str): ``'sinusoidal'`` (T2T's frozen table, the paper's
            setting) or ``'learnable'``.
        pe_norm_cfg (dict): Config of the PE LayerNorms (T2T's LN).
        t2t_cfg (dict): ``token_dims`` and ``kernel_ratio`` of the stem, and
            ``use_performer`` (True: the official T2T-ViT-7..14 stem; False:
            mmpretrain's transformer stem, T2T-ViT_t).
        qk_scale (float, optional): Attention scale of the blocks; None is
            ``head_dims ** -0.5`` (the official training code). The released
            official T2T-ViT-7 weights need ``256 ** -0.5`` (their
            ``t2t_vit_7(pretrained=True)``).
        frozen_parts (Sequence[str]): Parameters (names or module prefixes
            inside the backbone) kept frozen, e.g. what T2T's transfer
            learning leaves out of its optimizer.
        **kwargs: :class:`mmpretrain.models.T2T_ViT` arguments (``img_size``,
            ``with_cls_token``, ``out_type``, ``drop_path_rate``...);
            ``init_cfg`` defaults to the official initialisation.
    """
    arch_zoo = {
        **dict.fromkeys(['7', 't2t-vit-7'],
                        dict(embed_dims=256, num_layers=7, num_heads=4,
                             feedforward_channels=512)),
        **dict.fromkeys(['10', 't2t-vit-10'],
                        dict(embed_dims=256, num_layers=10, num_heads=4,
                             feedforward_channels=512)),
        **dict.fromkeys(['12', 't2t-vit-12'],
                        dict(embed_dims=256, num_layers=12, num_heads=4,
                             feedforward_channels=512)),
        **dict.fromkeys(['14', 't2t-vit-14'],
                        dict(embed_dims=384, num_layers=14, num_heads=6,
                             feedforward_channels=1152)),
    }
    ARCH_KEYS = {'embed_dims', 'num_layers', 'num_heads',
                 'feedforward_channels'}
    embedding_prefixes = ('tokens_to_token.', 'cls_token')
    # The official initialisation (T2T_ViT._init_weights).
    OFFICIAL_INIT = [
        dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ]

    def __init__(self,
                 arch='t2t-vit-7',
                 pe_cfg: Optional[dict] = None,
                 pos_source: str = 'sinusoidal',
                 pe_norm_cfg: dict = dict(type='LN'),
                 t2t_cfg: dict = dict(),
                 qk_scale: Optional[float] = None,
                 frozen_parts: Sequence[str] = (),
                 **kwargs):
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise ValueError(f'Arch {arch!r} is not in default archs '
                                 f'{sorted(self.arch_zoo)}.')
            arch = self.arch_zoo[arch.lower()]
        elif set(arch) != self.ARCH_KEYS:
            raise ValueError(f'A custom arch needs exactly the keys '
                             f'{sorted(self.ARCH_KEYS)}, got {sorted(arch)}.')
        if pos_source not in ('sinusoidal', 'learnable'):
            raise ValueError(f"pos_source must be 'sinusoidal' or "
                             f"'learnable', got {pos_source!r}.")
        kwargs.setdefault('init_cfg', self.OFFICIAL_INIT)
        t2t_cfg = dict(t2t_cfg)
        use_performer = t2t_cfg.pop('use_performer', True)
        kernel_ratio = t2t_cfg.pop('kernel_ratio', 0.5)
        super().__init__(
            embed_dims=arch['embed_dims'],
            num_layers=arch['num_layers'],
            layer_cfgs=dict(num_heads=arch['num_heads'],
                            feedforward_channels=arch['feedforward_channels']),
            t2t_cfg=t2t_cfg,
            **kwargs)
        # The training image size (h, w) the PE is stored for.
        self.img_size = to_2tuple(kwargs.get('img_size', 224))
        self.embed_dims = arch['embed_dims']
        if use_performer:
            self.tokens_to_token = PerformerT2TModule(
                img_size=kwargs.get('img_size', 224),
                in_channels=kwargs.get('in_channels', 3),
                embed_dims=arch['embed_dims'],
                kernel_ratio=kernel_ratio,
                **t2t_cfg)
        else:  # the transformer stem scales by its input width (official)
            for attn in (self.tokens_to_token.attention1.attn,
                         self.tokens_to_token.attention2.attn):
                fix_attention_scale(
                    attn, (attn.input_dims // attn.num_heads)**-0.5)
        for layer in self.encoder:
            # Only forward changes: parameters, names and init are kept.
            layer.__class__ = PET2TTransformerLayer
            fix_attention_scale(layer.attn,
                                qk_scale or layer.attn.head_dims**-0.5)
        self.global_pool = 'cls' if self.out_type == 'cls_token' else 'avg'
        # The table is a frozen parameter (T2T-ViT counts it), not
        # mmpretrain's buffer.
        self.build_pe(pe_cfg, self.patch_resolution, pe_norm_cfg,
                      pos_source=pos_source,
                      interpolate_mode=self.interpolate_mode)
        if self.pe.last_pos_norm is not None and not self.final_norm:
            raise ValueError('`last_norm_pos` adds LN\'\'(pos) to the final '
                             'norm (Eq. 11), which needs final_norm=True.')
        self.frozen_parts = tuple(frozen_parts)
        self._freeze(self.frozen_parts)

    def _freeze(self, parts: Sequence[str]):
        named = dict(self.named_parameters())
        renames = self.legacy_key_map()
        for part in (renames.get(p, p) for p in parts):
            hits = [name for name in named
                    if name == part or name.startswith(part + '.')]
            if not hits:
                raise ValueError(f'frozen_parts: {part!r} names no parameter '
                                 'of this backbone.')
            for name in hits:
                named[name].requires_grad = False

    @property
    def last_norm_name(self) -> Optional[str]:
        return 'norm' if self.final_norm else None

    def pe_stages(self):
        return [PEStage(self.encoder, self.embed_dims)]

    def forward(self, x: torch.Tensor):
        batch = x.shape[0]
        x, patch_resolution = self.tokens_to_token(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
        x, plan = self.add_input_pe(x, patch_resolution)

        outs = []
        last = len(self.encoder) - 1
        for i, layer in enumerate(self.encoder):
            x = layer(x, patch_resolution, plan.per_layer[i])
            if i == last and self.final_norm:
                x = self.last_norm_with_pe(x, plan)
            if i in self.out_indices:
                outs.append(self._format_output(x, patch_resolution))
        return tuple(outs)
