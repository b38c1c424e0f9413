"""Swin Transformer whose position embedding method is a switch (Table 1).

A thin subclass of mmpretrain's :class:`SwinTransformer` with its parameter
names, so mmpretrain Swin checkpoints load. Default is Swin-T with the
absolute PE (``use_abs_pos_embed=True``, Swin's ``ape``); the relative
position bias stays in every method. The layer-wise methods add
``LN'_l(pos_l)`` to ``norm1(x)`` of each of the blocks (``l`` counts blocks
across stages), i.e. before the window shift and partition, so every
window sees the PE of its own tokens. The PE exists only at the first
stage's grid and reaches later stages through the *same* PatchMerging
modules as the tokens (no parameters of its own: the only structure that
gives Table 1's counts). MPVG's ``LN''`` (Eq. 11) works on ``pos_0`` carried
to the last stage's grid and width, added to the last stage's norm output
before global average pooling.
"""
from typing import List, Optional

import torch
import torch.utils.checkpoint as cp
from mmpretrain.models.backbones.swin_transformer import (SwinBlock,
                                                          SwinTransformer)
from mmpretrain.registry import MODELS

from ..pe import PEBackboneMixin, PEBlockMixin, PEStage, add_pe


class PESwinBlock(PEBlockMixin, SwinBlock):
    """Swin block with ``attn(norm1(x) + pe)``; no parameters of its own."""
    pe_norm_name = 'norm1'

    def forward(self, x: torch.Tensor, hw_shape,
                pe: Optional[torch.Tensor] = None) -> torch.Tensor:

        def _inner_forward(x, pe):
            # ShiftWindowMSA shifts and partitions its input, so a PE added
            # here is shifted and windowed together with its tokens.
            x = x + self.attn(add_pe(self.norm1(x), pe), hw_shape)
            return self.ffn(self.norm2(x), identity=x)

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, pe, use_reentrant=False)
        return _inner_forward(x, pe)


@MODELS.register_module()
class PESwinTransformer(PEBackboneMixin, SwinTransformer):
    """Swin Transformer with Default / LaPE / PVG / MPVG position embedding.

    Args:
        pe_cfg (dict): ``dict(method='default'|'lape'|'pvg'|'mpvg', **knobs)``,
            see :mod:`mmmpvg.models.pe.methods`. For Swin the paper gives PVG
            and MPVG a PE LayerNorm in layer 0 as well.
        pe_norm_cfg (dict): Config of the PE LayerNorms (Swin's LN, eps 1e-5).
        use_abs_pos_embed (bool): Must stay True: ``absolute_pos_embed`` is
            the PE every method uses.
        **kwargs: :class:`mmpretrain.models.SwinTransformer` arguments
            (``arch``, ``img_size``, ``out_indices``, ``drop_path_rate``...).
    """
    pos_embed_name = 'absolute_pos_embed'
    pe_preset_overrides = dict(pvg=dict(include_layer0=True),
                               mpvg=dict(include_layer0=True))
    global_pool = 'avg'  # no class token: a GAP neck pools the last stage
    num_extra_tokens = 0

    def __init__(self,
                 pe_cfg: Optional[dict] = None,
                 pe_norm_cfg: dict = dict(type='LN'),
                 use_abs_pos_embed: bool = True,
                 **kwargs):
        if not use_abs_pos_embed:
            raise ValueError(
                'PESwinTransformer needs use_abs_pos_embed=True: its '
                '`absolute_pos_embed` is pos_0 of every PE method (use '
                "mmpretrain's SwinTransformer for a Swin without it).")
        super().__init__(use_abs_pos_embed=True, **kwargs)
        # mmpretrain builds SwinBlock by name; PESwinBlock only changes
        # forward, so retyping keeps parameters, names and initialisation.
        for block in self.pe_blocks():
            block.__class__ = PESwinBlock
        self.build_pe(pe_cfg, self.patch_resolution, pe_norm_cfg,
                      interpolate_mode=self.interpolate_mode)
        last_stage = len(self.stages) - 1
        if self.pe.last_pos_norm is not None and \
                last_stage not in self.out_indices:
            raise ValueError(
                f'`last_norm_pos` adds LN\'\'(pos) to the last stage\'s norm '
                f'(norm{last_stage}, Eq. 11), but out_indices='
                f'{tuple(self.out_indices)} does not output stage '
                f'{last_stage}.')

    @property
    def last_norm_name(self) -> str:
        return f'norm{len(self.stages) - 1}'

    def pe_stages(self) -> List[PEStage]:
        return [PEStage(stage.blocks, stage.embed_dims, stage.downsample)
                for stage in self.stages]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              *args, **kwargs):
        # mmpretrain upgrades old Swin checkpoints (final norm saved as
        # ``norm``, stored attention masks) only for its own class; this
        # subclass has the same names, so it needs the same upgrade.
        version = local_metadata.get('version')
        if version is None or version < 3:
            last_norm = f'norm{len(self.stages) - 1}.'
            for key in [k for k in state_dict if k.startswith(prefix)]:
                name = key[len(prefix):]
                if (version is None or version < 2) and \
                        name.startswith('norm.'):
                    state_dict[prefix + last_norm + name[len('norm.'):]] = \
                        state_dict.pop(key)
                elif 'attn_mask' in name:
                    del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      *args, **kwargs)

    def _freeze_stages(self):
        """Also freeze the PE of frozen stages: ``pos_0`` with the stem (as
        mmdet's Swin does) and each ``LN'_l`` with its block."""
        super()._freeze_stages()
        if self.frozen_stages < 0:
            return
        self.absolute_pos_embed.requires_grad = False
        frozen_layers = sum(self.depths[:self.frozen_stages + 1])
        for layer, norm in self.pe.layer_norms.items():
            if int(layer) < frozen_layers:
                norm.eval()
                for param in norm.parameters():
                    param.requires_grad = False

    @property
    def img_size(self):
        """The training image size (h, w) the PE is stored for."""
        return self.patch_embed.init_input_size

    def forward(self, x: torch.Tensor):
        x, hw_shape = self.patch_embed(x)
        x, plan = self.add_input_pe(x, hw_shape)

        outs = []
        layer = 0
        last_stage = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                x = block(x, hw_shape, plan.per_layer[layer])
                layer += 1
            if stage.downsample is not None and self.out_after_downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
            if i in self.out_indices:
                out = self.last_norm_with_pe(x, plan) if i == last_stage \
                    else getattr(self, f'norm{i}')(x)
                outs.append(
                    out.view(-1, *hw_shape, self.num_features[i]).permute(
                        0, 3, 1, 2).contiguous())
            if stage.downsample is not None and \
                    not self.out_after_downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
        return tuple(outs)
