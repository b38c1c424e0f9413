"""ViT-Adapter (Chen et al., ICLR 2023) around the PE-method DeiT backbone.

The plain-ViT part *is* :class:`PEVisionTransformer` (same parameter names,
so an mmpretrain classifier checkpoint loads with ``prefix='backbone.'``); the
adapter adds the spatial prior module, level embeddings and the interaction
blocks, and returns 4 maps (1/4, 1/8, 1/16, 1/32) for FPN / UperNet. The
ViT layers are DeiT's: ViT-Adapter's own ViT adds layer-scale gammas
(initialised to 1; 4.6k parameters in Ti) that DeiT checkpoints do not have.

Position embeddings. ViT-Adapter adds the bicubically resized ``pos_embed``
once before block 0. Here the ViT layers receive the PE plan of the chosen
method exactly as in classification: ``pos_0`` is resized to the feature
grid first, then the LN chain runs (``PEVisionTransformer.pe(grid)``).

MPVG's Last LN (Eq. 11, ``y = LN(x_L) + LN''(pos_0)``). ViT-Adapter never
uses the ViT's final norm; the last ViT tokens reach the outputs through
``add_vit_feature`` (added, resized, to all four levels before the output
BatchNorms). Decision: the ViT feature that is added to the outputs passes
through the Last LN *with* its PE term when the PE method has that term
(``vit_last_norm=None``, the default). This keeps what Eq. 11 does in the
classifier -- the counterbalanced tokens leave the ViT through
``LN(x) + LN''(pos_0)`` -- and leaves Default / LaPE / PVG exactly as
ViT-Adapter builds them. ``vit_last_norm=False`` is the alternative
(ViT-Adapter's structure for every method: no Last LN, MPVG's term dropped,
so MPVG differs from PVG only by its pretrained weights); ``True`` applies
the Last LN for every method (e.g. a PVG control with the same LN).

Window attention. Everything in a :class:`PETransformerLayer` except the
attention is token-wise, so running the layer on window-partitioned tokens
and window-partitioned PE *is* window attention. Grids that are not a
multiple of the window are split into full windows plus smaller border
windows (no padding tokens; ViT-Adapter pads with zeros that still take part
in the softmax). One difference remains: drop path inside the layer then
draws per window instead of per image during training.
"""
import math
from functools import partial
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.logging import print_log
from mmengine.model.weight_init import initialize, trunc_normal_
from mmengine.runner.checkpoint import CheckpointLoader
from mmseg.registry import MODELS as MMSEG_MODELS

from mmmpvg.models.backbones.pe_vision_transformer import PEVisionTransformer
from mmmpvg.models.position_embedding import PE_METHODS
from .adapter_modules import (InteractionBlock, SpatialPriorModule,
                              maps_to_tokens, reference_points,
                              tokens_to_maps)
from .ms_deform_attn import MSDeformAttn

VIT_PREFIXES = ('patch_embed.', 'pe.', 'layers.', 'last_norm.')


def _axis_blocks(size: int, window: int) -> List[Tuple[int, int, int]]:
    """(start, end, window) spans: full windows, then one border window."""
    full = size // window * window
    blocks = [(0, full, window)] if full else []
    if size > full:
        blocks.append((full, size, size - full))
    return blocks


def _partition(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """(B, h, w, C) with h % wh == w % ww == 0 -> (B * n, wh * ww, C)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def _merge(windows: torch.Tensor, b: int, h: int, w: int, wh: int,
           ww: int) -> torch.Tensor:
    """Inverse of :func:`_partition`."""
    x = windows.reshape(b, h // wh, w // ww, wh, ww, -1).permute(
        0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


def windowed_layer_forward(layer: nn.Module, x: torch.Tensor,
                           pe: Optional[torch.Tensor], grid: Tuple[int, int],
                           window: int) -> torch.Tensor:
    """Run ``layer(x, pe)`` as window attention on a (h, w) token grid."""
    b, _, c = x.shape
    h, w = grid
    x = x.reshape(b, h, w, c)
    pe = pe.reshape(1, h, w, c) if pe is not None else None
    rows = []
    for h0, h1, wh in _axis_blocks(h, window):
        cols = []
        for w0, w1, ww in _axis_blocks(w, window):
            windows = _partition(x[:, h0:h1, w0:w1], wh, ww)
            window_pe = None
            if pe is not None:
                window_pe = _partition(pe[:, h0:h1, w0:w1], wh, ww).repeat(
                    b, 1, 1)
            out = layer(windows, window_pe)
            cols.append(_merge(out, b, h1 - h0, w1 - w0, wh, ww))
        rows.append(torch.cat(cols, dim=2))
    return torch.cat(rows, dim=1).reshape(b, h * w, c)


def _per_layer(value, num_layers: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != num_layers:
            raise ValueError(f'{name} lists {len(value)} layers, the ViT has '
                             f'{num_layers}.')
        return list(value)
    return [value] * num_layers


@MMDET_MODELS.register_module()
@MMSEG_MODELS.register_module()
class ViTAdapter(PEVisionTransformer):
    """ViT-Adapter over a PE-method DeiT.

    Args:
        arch (str | dict): ViT arch, see :class:`PEVisionTransformer`.
        img_size (int): Size the ViT was pre-trained at; its PE is stored at
            ``img_size // patch_size`` and resized to every input.
        pe_cfg (dict): PE method and knobs of the ViT.
        conv_inplane (int): Width of the spatial prior module's stem.
        n_points (int): Deformable sampling points per head and level.
        deform_num_heads (int): Heads of the deformable attentions.
        deform_ratio (float): Value-projection width ratio.
        init_values (float): Initial injector gate ``gamma``.
        interaction_indexes (list[list[int]]): ``[first, last]`` ViT layers
            of each interaction block; together they cover every layer.
        with_cffn (bool): Conv-FFN in the extractors.
        cffn_ratio (float): Conv-FFN hidden width ratio.
        use_extra_extractor (bool): Two more extractors in the last block.
        add_vit_feature (bool): Add the (resized) last ViT tokens to every
            output level.
        vit_last_norm (bool | None): Pass that ViT feature through the Last
            LN (with MPVG's PE term); ``None`` = only when the PE method has a
            PE term in the Last LN. See the module docstring.
        window_attn (bool | list[bool]): Window attention per ViT layer.
        window_size (int | list[int | None]): Window per ViT layer.
        drop_path_rate (float): Stochastic depth of the ViT layers (linear)
            and of the extractors' conv-FFN.
        norm_cfg (dict): Norm of the spatial prior module and the outputs
            (``SyncBN`` as in ViT-Adapter; ``BN`` for single-process/CPU).
        ln_cfg (dict): LayerNorm of the ViT and the interaction blocks.
        msda_backend (str): ``'auto'``, ``'pytorch'`` or ``'compiled'``.
        with_cp (bool): Gradient checkpointing of the ViT layers, injectors
            and extractors.
        init_cfg (dict): ``dict(type='Pretrained', checkpoint=...,
            prefix='backbone.')`` loads the ViT from an mmpretrain
            checkpoint; mismatched PE methods are refused.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'deit-tiny',
                 img_size: int = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 pe_cfg: Optional[dict] = None,
                 conv_inplane: int = 64,
                 n_points: int = 4,
                 deform_num_heads: int = 6,
                 deform_ratio: float = 1.0,
                 init_values: float = 0.,
                 interaction_indexes: Sequence[Sequence[int]] = (
                     (0, 2), (3, 5), (6, 8), (9, 11)),
                 with_cffn: bool = True,
                 cffn_ratio: float = 0.25,
                 use_extra_extractor: bool = True,
                 add_vit_feature: bool = True,
                 vit_last_norm: Optional[bool] = None,
                 window_attn: Union[bool, Sequence[bool]] = False,
                 window_size: Union[int, Sequence[Optional[int]]] = 14,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 ln_cfg: dict = dict(type='LN', eps=1e-6),
                 msda_backend: str = 'auto',
                 with_cp: bool = False,
                 init_cfg=None):
        init_cfgs = init_cfg if isinstance(init_cfg, list) else \
            [init_cfg] if init_cfg else []
        pretrained = [c for c in init_cfgs if c.get('type') == 'Pretrained']
        if len(pretrained) > 1:
            raise ValueError('ViTAdapter takes one Pretrained init_cfg.')
        other_init = [c for c in init_cfgs if c.get('type') != 'Pretrained']

        pe_cfg = dict(pe_cfg or {})
        knobs = dict(PE_METHODS.get(pe_cfg.get('method', 'default'), {}),
                     **pe_cfg)
        has_pe_term = knobs.get('last_norm_pos') is not None
        if vit_last_norm and not add_vit_feature:
            raise ValueError('vit_last_norm=True needs add_vit_feature=True: '
                             'without the ViT feature the Last LN has no '
                             'output to act on.')
        if vit_last_norm is None:
            vit_last_norm = has_pe_term and add_vit_feature
        if has_pe_term and not vit_last_norm:
            # The PE norm of Eq. 11 would be unused: do not build it.
            pe_cfg['last_norm_pos'] = None

        super().__init__(
            arch=arch, img_size=img_size, patch_size=patch_size,
            in_channels=in_channels, global_pool='avg', pe_cfg=pe_cfg,
            out_type='featmap', drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
            qkv_bias=qkv_bias, norm_cfg=ln_cfg, init_cfg=other_init or None)
        self.pretrained_cfg = pretrained[0] if pretrained else None
        if not vit_last_norm:
            self.last_norm = None

        flat = [i for first, last in interaction_indexes
                for i in range(first, last + 1)]
        if flat != list(range(self.num_layers)):
            raise ValueError(
                f'interaction_indexes {list(map(list, interaction_indexes))} '
                f'must split layers 0..{self.num_layers - 1} into '
                'consecutive [first, last] runs.')
        self.interaction_indexes = [tuple(r) for r in interaction_indexes]
        self.window_attn = _per_layer(window_attn, self.num_layers,
                                      'window_attn')
        self.window_size = _per_layer(window_size, self.num_layers,
                                      'window_size')
        for i, (on, size) in enumerate(zip(self.window_attn,
                                           self.window_size)):
            if on and not (isinstance(size, int) and size > 0):
                raise ValueError(f'Layer {i} has window attention but '
                                 f'window_size={size!r}.')
        self.add_vit_feature = add_vit_feature
        self.with_cp = with_cp

        dims = self.embed_dims
        self.level_embed = nn.Parameter(torch.zeros(3, dims))
        self.spm = SpatialPriorModule(in_channels, conv_inplane, dims,
                                      norm_cfg)
        self.interactions = nn.ModuleList([
            InteractionBlock(
                dims, deform_num_heads, n_points, deform_ratio, init_values,
                with_cffn, cffn_ratio, drop_rate, drop_path_rate,
                num_extra_extractors=2 if use_extra_extractor
                and i == len(interaction_indexes) - 1 else 0,
                ln_cfg=ln_cfg, msda_backend=msda_backend, with_cp=with_cp)
            for i in range(len(interaction_indexes))
        ])
        self.up = nn.ConvTranspose2d(dims, dims, 2, 2)
        self.out_norms = nn.ModuleList(
            [build_norm_layer(norm_cfg, dims)[1] for _ in range(4)])

    # ------------------------------------------------------------------ init
    @staticmethod
    def _init_module(m: nn.Module):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / (fan_out // m.groups)))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def init_weights(self):
        """ViT-Adapter's init (Deformable DETR's for the deformable
        attentions), any other ``init_cfg``, then the pre-trained ViT.

        Done here in full rather than through ``BaseModule.init_weights``,
        whose parameter report would be written before this init ran.
        """
        self.apply(self._init_module)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.init_weights()
        trunc_normal_(self.pe.pos_embed, std=.02)
        nn.init.normal_(self.level_embed)
        if self.init_cfg:
            initialize(self, self.init_cfg)
        if self.pretrained_cfg is not None:
            cfg = self.pretrained_cfg
            self.load_vit_checkpoint(cfg['checkpoint'], cfg.get('prefix', ''),
                                     cfg.get('map_location', 'cpu'))
        self._is_init = True

    def load_vit_checkpoint(self, filename: str, prefix: str = 'backbone.',
                            map_location: str = 'cpu'):
        """Load the ViT part from a classifier checkpoint (keys under
        ``prefix``); the adapter's own modules keep their init.

        Refuses checkpoints whose ViT does not match this config (most
        often a different PE method), listing the keys.
        """
        checkpoint = CheckpointLoader.load_checkpoint(
            filename, map_location=map_location)
        state = checkpoint.get('state_dict', checkpoint)
        state = {k[len(prefix):]: v for k, v in state.items()
                 if k.startswith(prefix)}
        if not state:
            raise ValueError(f'No keys start with prefix {prefix!r} in '
                             f'{filename}.')
        notes = []
        if 'cls_token' in state:
            # ViT-Adapter drops the class token and its PE row.
            del state['cls_token']
            pos = state.get('pe.pos_embed')
            if pos is not None and pos.shape[1] == \
                    self.pe.pos_embed.shape[1] + 1:
                state['pe.pos_embed'] = pos[:, 1:]
            notes.append('dropped the class token and its PE row')
        unused = [k for k in state
                  if (k.startswith('last_norm.') and self.last_norm is None)
                  or (k.startswith('pe.last_pos_norm.')
                      and self.pe.last_pos_norm is None)]
        if unused:
            notes.append(f'not used with vit_last_norm off: {sorted(unused)}')
            for k in unused:
                del state[k]

        own = self.state_dict()
        # The ViT must load completely; adapter keys load where present
        # (e.g. from a ViTAdapter checkpoint).
        missing = sorted(k for k in own
                         if k.startswith(VIT_PREFIXES) and k not in state)
        unexpected = sorted(set(state) - set(own))
        mismatched = sorted(
            f'{k}: checkpoint {tuple(state[k].shape)} vs model '
            f'{tuple(own[k].shape)}' for k in set(own) & set(state)
            if state[k].shape != own[k].shape)
        if missing or unexpected or mismatched:
            lines = [f'Checkpoint {filename} (prefix {prefix!r}) does not fit '
                     f'this ViT (PE method {self.pe.method!r}, PE norms for '
                     f'layers {self.pe.layers_with_pe()}).']
            for title, keys in (('missing in checkpoint', missing),
                                ('unexpected in checkpoint', unexpected),
                                ('shape mismatch', mismatched)):
                if keys:
                    lines.append(f'  {title}: {keys}')
            if any(k.startswith('pe.') for k in missing + unexpected):
                lines.append('  The checkpoint was probably trained with '
                             'another PE method: set pe_cfg to match it.')
            if any(k.startswith('pe.pos_embed') for k in mismatched):
                lines.append('  pe.pos_embed differs: set img_size to the '
                             "checkpoint's training size.")
            raise ValueError('\n'.join(lines))
        self.load_state_dict(state, strict=False)
        print_log(f'ViTAdapter: loaded {len(state)} tensors from '
                  f'{filename}' + ''.join(f'; {n}' for n in notes),
                  logger='current')

    # --------------------------------------------------------------- forward
    def _vit_layer(self, index: int, x: torch.Tensor,
                   pe: Optional[torch.Tensor],
                   grid: Tuple[int, int]) -> torch.Tensor:
        layer = self.layers[index]
        fn = partial(windowed_layer_forward, layer, grid=grid,
                     window=self.window_size[index]) \
            if self.window_attn[index] else layer
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(fn, x, pe, use_reentrant=False)
        return fn(x, pe)

    def forward(self, img: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        h, w = img.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(
                f'ViTAdapter needs input sizes divisible by 32 (1/32 is its '
                f'coarsest level), got {h}x{w}: pad the batch (mmdet '
                "pad_size_divisor=32, mmseg 'ResizeToMultiple').")
        batch = img.shape[0]
        c1, c_maps = self.spm(img)
        c_shapes = [tuple(m.shape[-2:]) for m in c_maps]
        c = maps_to_tokens([
            m + e[None, :, None, None]
            for m, e in zip(c_maps, self.level_embed)
        ])

        x, grid = self.embed(img)
        grid = tuple(grid)
        plan = self.pe(grid)
        if plan.to_input is not None:
            x = x + plan.to_input
        x = self.drop_after_pos(x)

        x_ref = reference_points([grid], img.device)
        c_ref = reference_points(c_shapes, img.device)
        for block, (first, last) in zip(self.interactions,
                                        self.interaction_indexes):
            x = block.injector(x, c, x_ref, c_shapes)
            for i in range(first, last + 1):
                x = self._vit_layer(i, x, plan.per_layer[i], grid)
            c = block.extract(c, x, c_ref, c_shapes, grid)

        c2, c3, c4 = tokens_to_maps(c, c_shapes)
        outs = [self.up(c2) + c1, c2, c3, c4]
        if self.add_vit_feature:
            if self.last_norm is not None:
                x = self.last_norm(x)
                if plan.to_last_norm is not None:
                    x = x + plan.to_last_norm
            x3 = x.transpose(1, 2).reshape(batch, self.embed_dims, *grid)
            vit = [
                F.interpolate(x3, scale_factor=s, mode='bilinear',
                              align_corners=False) for s in (4, 2)
            ] + [x3, F.interpolate(x3, scale_factor=0.5, mode='bilinear',
                                   align_corners=False)]
            outs = [o + v for o, v in zip(outs, vit)]
        return tuple(norm(o) for norm, o in zip(self.out_norms, outs))
