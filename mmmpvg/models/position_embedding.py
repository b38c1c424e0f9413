"""The one position-embedding (PE) abstraction every mmmpvg backbone uses.

The paper's methods differ only in *where* a learnable absolute PE enters a
transformer, so a method is a set of knobs (data in the config), not a copy
of the transformer:

=====================  =======  =========  ======  ============  ==========
knob                   default  lape       pvg     mpvg          meaning
=====================  =======  =========  ======  ============  ==========
``add_to_input``       True     False      True    True          x_0 = patches + pos (Eq. 1, 8)
``layerwise``          False    True       True    True          layers get LN'_l(.) at the attention input (Eq. 6, 9)
``include_layer0``     --       True       False   False         layer 0 gets a PE too
``hierarchical``       --       True       True    True          pos_l = LN'_l(pos_{l-1}), else LN'_l(pos_0)
``last_norm_pos``      None     None       None    0             y = LN(x) + LN''(pos_k) (Eq. 11)
=====================  =======  =========  ======  ============  ==========

``pos_0`` is the raw (resized) PE; ``pos_k`` (k >= 1) is the PE that enters
layer k (Table 5's notation). The chain never depends on the image, so in
eval mode it is computed once per grid size and reused until a weight of the
chain changes.
"""
import math
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmpretrain.models.utils import resize_pos_embed

PE_METHODS = {
    'default': dict(add_to_input=True, layerwise=False, last_norm_pos=None),
    'lape': dict(add_to_input=False, layerwise=True, include_layer0=True,
                 hierarchical=True, last_norm_pos=None),
    'pvg': dict(add_to_input=True, layerwise=True, include_layer0=False,
                hierarchical=True, last_norm_pos=None),
    'mpvg': dict(add_to_input=True, layerwise=True, include_layer0=False,
                 hierarchical=True, last_norm_pos=0),
}
LAYERWISE_KNOBS = ('include_layer0', 'hierarchical')


class PEPlan(NamedTuple):
    """What one forward pass adds where; tensors are (1, tokens, dims)."""
    to_input: Optional[torch.Tensor]
    per_layer: List[Optional[torch.Tensor]]
    to_last_norm: Optional[torch.Tensor]


def resolve_pe_cfg(pe_cfg: Optional[dict], num_layers: int,
                   with_cls_token: bool) -> dict:
    """Expand ``dict(method=..., **overrides)`` into validated knobs."""
    pe_cfg = dict(pe_cfg or {})
    method = pe_cfg.pop('method', 'default')
    if method not in PE_METHODS:
        raise ValueError(f'Unknown PE method {method!r}; choose one of '
                         f'{sorted(PE_METHODS)}.')
    knobs = dict(PE_METHODS[method])
    unknown = set(pe_cfg) - {'add_to_input', 'layerwise', 'last_norm_pos',
                             *LAYERWISE_KNOBS}
    if unknown:
        raise ValueError(f'Unknown PE knob(s) {sorted(unknown)} for method '
                         f'{method!r}.')
    knobs.update(pe_cfg)

    if knobs['layerwise']:
        for name in LAYERWISE_KNOBS:
            knobs.setdefault(name, PE_METHODS['pvg'][name])
    else:
        misplaced = [n for n in LAYERWISE_KNOBS if knobs.get(n) is not None]
        if misplaced:
            raise ValueError(f'PE knob(s) {misplaced} only apply with '
                             '`layerwise=True`.')
        for name in LAYERWISE_KNOBS:
            knobs[name] = None
    if not knobs['add_to_input'] and not knobs['layerwise']:
        raise ValueError('PE knobs `add_to_input=False` and '
                         '`layerwise=False` leave the position embedding '
                         'unused.')

    k = knobs['last_norm_pos']
    if k is not None:
        if with_cls_token:
            raise ValueError(
                '`last_norm_pos` (PE in the Last LN, Eq. 11 / MPVG) needs '
                "global average pooling: the paper calls it incompatible "
                "with the class token. Use global_pool='avg'.")
        receives = knobs['layerwise'] and (
            knobs['include_layer0'] or k >= 1) and 0 <= k < num_layers
        if k != 0 and not receives:
            raise ValueError(
                f'`last_norm_pos={k}` names pos_{k}, the PE entering layer '
                f'{k}, but that layer receives no PE with these knobs '
                f'(layers 0..{num_layers - 1}).')
    knobs['method'] = method
    return knobs


class LayerwisePositionEmbedding(BaseModule):
    """A learnable absolute PE and the LayerNorms that deliver it.

    Args:
        grid_size (tuple): Patch grid (h, w) the PE is stored at.
        embed_dims (int): Token dimension.
        num_layers (int): Transformer depth L.
        num_extra_tokens (int): Tokens before the patches (1 for a class
            token); they carry a PE row too.
        pe_cfg (dict): ``dict(method='default'|'lape'|'pvg'|'mpvg', **knobs)``.
        norm_cfg (dict): Config of the PE LayerNorms.
    """

    def __init__(self,
                 grid_size: Tuple[int, int],
                 embed_dims: int,
                 num_layers: int,
                 num_extra_tokens: int = 0,
                 pe_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        knobs = resolve_pe_cfg(pe_cfg, num_layers, num_extra_tokens > 0)
        self.method = knobs['method']
        self.add_to_input = knobs['add_to_input']
        self.layerwise = knobs['layerwise']
        self.hierarchical = knobs['hierarchical']
        self.last_norm_pos = knobs['last_norm_pos']
        self.grid_size = tuple(grid_size)
        self.num_layers = num_layers
        self.num_extra_tokens = num_extra_tokens

        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_extra_tokens + grid_size[0] * grid_size[1],
                        embed_dims))
        # Keyed by the layer each norm feeds, so checkpoints read "layer 5".
        self.layer_norms = nn.ModuleDict()
        if self.layerwise:
            first = 0 if knobs['include_layer0'] else 1
            for layer in range(first, num_layers):
                self.layer_norms[str(layer)] = build_norm_layer(
                    norm_cfg, embed_dims)[1]
        # A separate LN for the PE term of Eq. 11: Table 1 counts 2*D more
        # parameters for MPVG than PVG, so it shares nothing with the Last LN.
        self.last_pos_norm = (
            build_norm_layer(norm_cfg, embed_dims)[1]
            if self.last_norm_pos is not None else None)
        self._cache_key = None
        self._cache_plan = None
        self._register_load_state_dict_pre_hook(self._resize_loaded_pos_embed)

    def _resize_loaded_pos_embed(self, state_dict, prefix, *args, **kwargs):
        """Resize a checkpoint's ``pos_embed`` stored at another grid (e.g. a
        224-px checkpoint in a 384-px model) to this module's grid, as timm
        and mmpretrain do on load."""
        key = prefix + 'pos_embed'
        if key not in state_dict or \
                state_dict[key].shape == self.pos_embed.shape:
            return
        loaded = state_dict[key]
        rows = loaded.shape[1] - self.num_extra_tokens
        side = math.isqrt(max(rows, 0))
        if loaded.dim() != 3 or loaded.shape[2] != self.pos_embed.shape[2] \
                or side * side != rows:
            raise ValueError(
                f'{key} in the checkpoint has shape {tuple(loaded.shape)}, '
                f'which is no square patch grid with '
                f'{self.num_extra_tokens} class-token row(s) and '
                f'{self.pos_embed.shape[2]} dims as this model needs '
                f'({tuple(self.pos_embed.shape)}): was it trained with '
                'another pooling (class token vs GAP) or width? Convert it '
                'with tools/model_converters/deit_to_mmmpvg.py.')
        state_dict[key] = resize_pos_embed(
            loaded, (side, side), self.grid_size, mode='bicubic',
            num_extra_tokens=self.num_extra_tokens)
        print_log(f'Resized {key} from a {side}x{side} to a '
                  f'{self.grid_size[0]}x{self.grid_size[1]} grid (bicubic).',
                  logger='current')

    def layers_with_pe(self) -> List[int]:
        return [int(k) for k in self.layer_norms]

    def resized(self, grid_size: Tuple[int, int]) -> torch.Tensor:
        """``pos_0``: the PE interpolated (bicubic) to ``grid_size``."""
        return resize_pos_embed(
            self.pos_embed, self.grid_size, grid_size, mode='bicubic',
            num_extra_tokens=self.num_extra_tokens)

    def plan_from(self, pos: torch.Tensor) -> PEPlan:
        """Run the LN chain on a resized ``pos_0`` (no caching)."""
        per_layer: List[Optional[torch.Tensor]] = [None] * self.num_layers
        previous = pos
        for layer, norm in self.layer_norms.items():
            current = norm(previous if self.hierarchical else pos)
            per_layer[int(layer)] = current
            if self.hierarchical:
                previous = current
        to_last_norm = None
        if self.last_pos_norm is not None:
            k = self.last_norm_pos
            to_last_norm = self.last_pos_norm(pos if k == 0 else per_layer[k])
        return PEPlan(pos if self.add_to_input else None, per_layer,
                      to_last_norm)

    def forward(self, grid_size: Tuple[int, int]) -> PEPlan:
        grid_size = tuple(grid_size)
        if self.training or torch.is_grad_enabled():
            return self.plan_from(self.resized(grid_size))
        # Eval without autograd: reuse the chain until a weight changes.
        # Any in-place update (optimizer step, load_state_dict) bumps a
        # tensor's version; moving the module changes its storage.
        key = (grid_size, ) + tuple(
            (p.data_ptr(), p._version, p.dtype) for p in self.parameters())
        if key != self._cache_key:
            self._cache_plan = self.plan_from(self.resized(grid_size))
            self._cache_key = key
        return self._cache_plan
