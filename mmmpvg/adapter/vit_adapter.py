"""ViT-Adapter (Chen et al., ICLR 2023) around the PE-method DeiT backbone.

The plain-ViT part *is* :class:`PEVisionTransformer` (same parameter names,
so an mmpretrain classifier checkpoint loads with ``prefix='backbone.'``); the
adapter adds the spatial prior module, level embeddings and the interaction
blocks, and returns 4 maps (1/4, 1/8, 1/16, 1/32) for FPN / UperNet. As in
ViT-Adapter's ``base/vit.py`` the ViT layers carry layer-scale gammas on both
branches (``layer_scale_init_value=1.0``; 2 x 192 x 12 = 4,608 parameters in
Ti); DeiT checkpoints have none, so they stay at 1.0 when one is loaded.

ViT-Adapter has two backbones that differ in which ViT tokens reach the
outputs (``vit_feature_source``):

* ``'last'`` (``detection/.../vit_adapter.py``): the tokens after the last
  layer, resized to 1/4, 1/8, 1/16 and 1/32, are added to all four levels.
* ``'per_interaction'`` (``segmentation/.../vit_adapter.py``): the tokens
  after interaction block i (after layers 2, 5, 8, 11 in Ti) are added to
  level i only, resized to that level.

Position embeddings. ViT-Adapter adds the bicubically resized ``pos_embed``
once before block 0 (and keeps, unused, the class token's row). Here the ViT
layers receive the PE plan of the chosen method exactly as in
classification: ``pos_0`` is resized to the feature grid first, then the LN
chain runs (the contract's ``add_input_pe``).

MPVG's Last LN (Eq. 11, ``y = LN(x_L) + LN''(pos_0)``). ViT-Adapter never
applies the ViT's final norm, and by default (``vit_last_norm=False``)
neither does this adapter, for any PE method: MPVG's LN'' is not built, so
the MPVG adapter has PVG's structure and the four methods differ only in the
ViT's PE method and pre-trained weights. ``vit_last_norm=True`` is our
extension: the last ViT tokens leave through the Last LN, with MPVG's
``LN''(pos_0)`` term (a plain Last LN for the other methods, e.g. the PVG
control). Like mmseg's ViT ``final_norm`` it acts on the last layer's tokens
only: on all four levels with ``'last'``, on the 1/32 level with
``'per_interaction'``.

Window attention (:class:`WindowMultiheadAttention`) replaces the attention
of the windowed layers; the layer itself runs on the whole image, so drop
path draws per image as in ViT-Adapter.
"""
import math
from typing import Optional, Sequence, Tuple, Union

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
from mmmpvg.models.pe import LAST_POS_NORM_PREFIX, resolve_pe_cfg
from .adapter_modules import (InteractionBlock, SpatialPriorModule,
                              maps_to_tokens, reference_points,
                              tokens_to_maps)
from .ms_deform_attn import MSDeformAttn
from .window_attention import WINDOW_PADDINGS, WindowMultiheadAttention

LAYER_SCALE_SUFFIXES = ('.attn.gamma1.weight', '.ffn.gamma2.weight')
VIT_FEATURE_SOURCES = ('last', 'per_interaction')
# Scale from the ViT grid (1/16) to output levels 1/4, 1/8, 1/16, 1/32.
LEVEL_SCALES = (4, 2, 1, 0.5)


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
        add_vit_feature (bool): Add (resized) ViT tokens to the output
            levels.
        vit_feature_source (str): Which ViT tokens: ``'last'`` (the
            detection backbone: the last layer's, to every level) or
            ``'per_interaction'`` (the segmentation backbone: interaction
            block i's, to level i). See the module docstring.
        vit_last_norm (bool): Pass the last ViT tokens through the Last LN
            (with MPVG's ``LN''(pos_0)``); our extension, ViT-Adapter has
            none (``False``).
        layer_scale_init_value (float): Layer-scale gammas of the ViT layers
            (ViT-Adapter: 1.0; 0 builds none, as DeiT).
        window_attn (bool | list[bool]): Window attention per ViT layer.
        window_size (int | list[int | None]): Window per ViT layer.
        window_padding (str): Grids that are not a multiple of the window:
            ``'zeros'`` (ViT-Adapter: zero-padded q, k, v, padded keys in the
            softmax) or ``'masked'`` (smaller border windows), see
            :class:`WindowMultiheadAttention`.
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
                 vit_feature_source: str = 'last',
                 vit_last_norm: bool = False,
                 layer_scale_init_value: float = 1.0,
                 window_attn: Union[bool, Sequence[bool]] = False,
                 window_size: Union[int, Sequence[Optional[int]]] = 14,
                 window_padding: str = 'zeros',
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

        if vit_feature_source not in VIT_FEATURE_SOURCES:
            raise ValueError(f'vit_feature_source must be one of '
                             f'{VIT_FEATURE_SOURCES}, got '
                             f'{vit_feature_source!r}.')
        if vit_feature_source == 'per_interaction' and \
                len(interaction_indexes) != len(LEVEL_SCALES):
            raise ValueError(
                "vit_feature_source='per_interaction' adds interaction block "
                f'i to output level i: it needs {len(LEVEL_SCALES)} blocks, '
                f'got {len(interaction_indexes)}.')
        if window_padding not in WINDOW_PADDINGS:
            raise ValueError(f'window_padding must be one of '
                             f'{WINDOW_PADDINGS}, got {window_padding!r}.')
        if vit_last_norm not in (True, False):
            raise ValueError(f'vit_last_norm must be True or False, got '
                             f'{vit_last_norm!r}.')
        if vit_last_norm and not add_vit_feature:
            raise ValueError('vit_last_norm=True needs add_vit_feature=True: '
                             'without the ViT feature the Last LN has no '
                             'output to act on.')
        pe_cfg = dict(pe_cfg or {})
        # Whether the method's classifier has Eq. 11's LN'', also when this
        # adapter does not build it: checked against checkpoints.
        self.method_has_last_pos_norm = \
            resolve_pe_cfg(pe_cfg)['last_norm_pos'] is not None
        if not vit_last_norm:
            # The PE norm of Eq. 11 would be unused: do not build it.
            pe_cfg['last_norm_pos'] = None

        super().__init__(
            arch=arch, img_size=img_size, patch_size=patch_size,
            in_channels=in_channels, global_pool='avg', pe_cfg=pe_cfg,
            out_type='featmap', drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
            qkv_bias=qkv_bias, norm_cfg=ln_cfg,
            layer_scale_init_value=layer_scale_init_value,
            init_cfg=other_init or None)
        self.pretrained_cfg = pretrained[0] if pretrained else None
        self.layer_scale_init_value = layer_scale_init_value
        if not vit_last_norm:
            setattr(self, self.last_norm_name, None)

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
            if on:
                layer = self.layers[i]
                layer.attn = WindowMultiheadAttention(
                    embed_dims=self.embed_dims,
                    num_heads=layer.attn.num_heads,
                    attn_drop=attn_drop_rate,
                    proj_drop=drop_rate,
                    dropout_layer=dict(
                        type='DropPath',
                        drop_prob=layer.attn.out_drop.drop_prob),
                    qkv_bias=qkv_bias,
                    layer_scale_init_value=layer_scale_init_value,
                    window_size=size,
                    window_padding=window_padding)
        self.add_vit_feature = add_vit_feature
        self.vit_feature_source = vit_feature_source
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
        self.init_pe_weights()
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
        self.upgrade_legacy_keys(state)
        pos_key, last_norm = self.pos_embed_name, f'{self.last_norm_name}.'
        notes = []
        if 'cls_token' in state:
            # ViT-Adapter drops the class token and its PE row.
            del state['cls_token']
            if pos_key in state:
                state[pos_key] = state[pos_key][:, 1:]
            notes.append('dropped the class token and its PE row')
        term_mismatch = None
        if f'{last_norm}weight' in state:
            # A checkpoint with its Last LN shows whether it had LN''.
            has_term = any(k.startswith(LAST_POS_NORM_PREFIX) for k in state)
            if has_term != self.method_has_last_pos_norm:
                term_mismatch = (
                    f"the checkpoint {'has' if has_term else 'lacks'} MPVG's "
                    f'Last-LN PE norm (Eq. 11, {LAST_POS_NORM_PREFIX}*), '
                    f'which PE method {self.pe_method!r} '
                    f"{'does not have' if has_term else 'has'}")
        unused = [k for k in state
                  if (k.startswith(last_norm) and self.pe_last_norm() is None)
                  or (k.startswith(LAST_POS_NORM_PREFIX)
                      and self.pe.last_pos_norm is None)]
        if unused:
            notes.append(f'not used with vit_last_norm off: {sorted(unused)}')
            for k in unused:
                del state[k]

        own = self.state_dict()
        # The ViT must load completely, except for layer-scale gammas that a
        # DeiT / mmpretrain classifier does not have; adapter keys load where
        # present (e.g. from a ViTAdapter checkpoint).
        vit_prefixes = ('patch_embed.', 'layers.',
                        last_norm) + self.pe_key_prefixes()
        missing = sorted(k for k in own
                         if k.startswith(vit_prefixes) and k not in state)
        gammas = [k for k in missing if k.endswith(LAYER_SCALE_SUFFIXES)]
        if gammas:
            missing = [k for k in missing if k not in gammas]
            notes.append(f'{len(gammas)} layer-scale gammas are not in the '
                         'checkpoint and keep their init '
                         f'{self.layer_scale_init_value}')
        unexpected = sorted(set(state) - set(own))
        # A PE stored at another grid is resized by the PE module on load.
        mismatched = sorted(
            f'{k}: checkpoint {tuple(state[k].shape)} vs model '
            f'{tuple(own[k].shape)}' for k in set(own) & set(state)
            if state[k].shape != own[k].shape and k != pos_key)
        if missing or unexpected or mismatched or term_mismatch:
            lines = [f'Checkpoint {filename} (prefix {prefix!r}) does not fit '
                     f'this ViT (PE method {self.pe_method!r}, PE norms for '
                     f'layers {self.pe.layers_with_pe()}).']
            for title, keys in (('missing in checkpoint', missing),
                                ('unexpected in checkpoint', unexpected),
                                ('shape mismatch', mismatched)):
                if keys:
                    lines.append(f'  {title}: {keys}')
            if term_mismatch:
                lines.append(f'  {term_mismatch}')
            if term_mismatch or any(k.startswith(self.pe_key_prefixes())
                                    for k in missing + unexpected):
                lines.append('  The checkpoint was probably trained with '
                             'another PE method: set pe_cfg to match it.')
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
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(layer, x, grid, pe, use_reentrant=False)
        return layer(x, grid, pe)

    def forward(self, img: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        h, w = img.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(
                f'ViTAdapter needs input sizes divisible by 32 (1/32 is its '
                f'coarsest level), got {h}x{w}: pad the batch (mmdet '
                "pad_size_divisor=32, mmseg 'ResizeToMultiple').")
        c1, c_maps = self.spm(img)
        c_shapes = [tuple(m.shape[-2:]) for m in c_maps]
        c = maps_to_tokens([
            m + e[None, :, None, None]
            for m, e in zip(c_maps, self.level_embed)
        ])

        x, grid = self.embed(img)
        x, plan = self.add_input_pe(x, grid)

        x_ref = reference_points([grid], img.device)
        c_ref = reference_points(c_shapes, img.device)
        block_tokens = []
        for block, (first, last) in zip(self.interactions,
                                        self.interaction_indexes):
            x = block.injector(x, c, x_ref, c_shapes)
            for i in range(first, last + 1):
                x = self._vit_layer(i, x, plan.per_layer[i], grid)
            block_tokens.append(x)
            c = block.extract(c, x, c_ref, c_shapes, grid)

        c2, c3, c4 = tokens_to_maps(c, c_shapes)
        outs = [self.up(c2) + c1, c2, c3, c4]
        if self.add_vit_feature:
            if self.pe_last_norm() is not None:
                block_tokens[-1] = self.last_norm_with_pe(block_tokens[-1],
                                                          plan)
            if self.vit_feature_source == 'last':
                block_tokens = block_tokens[-1:] * len(LEVEL_SCALES)
            for level, (tokens, scale) in enumerate(
                    zip(block_tokens, LEVEL_SCALES)):
                vit, = tokens_to_maps(tokens, [grid])
                if scale != 1:
                    vit = F.interpolate(vit, scale_factor=scale,
                                        mode='bilinear', align_corners=False)
                outs[level] = outs[level] + vit
        return tuple(norm(o) for norm, o in zip(self.out_norms, outs))
