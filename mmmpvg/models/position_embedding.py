"""The one position-embedding (PE) abstraction every mmmpvg backbone uses.

The paper's methods differ only in *where* a learnable absolute PE enters a
transformer, so a method is a set of knobs (data in the config), not a copy
of the transformer:

=====================  =======  =========  ======  ============  ==========
knob                   default  lape       pvg     mpvg          meaning
=====================  =======  =========  ======  ============  ==========
``add_to_input``       True     False      True    True          x_0 = patches + pos (Eq. 1, 8)
``layerwise``          False    True       True    True          layers get LN'_l(.) at the attention input (Eq. 6, 9)
``include_layer0``     --       True       False*  False*        layer 0 gets a PE too
``hierarchical``       --       True       True    True          pos_l = LN'_l(pos_{l-1}), else LN'_l(pos_0)
``last_norm_pos``      None     None       None    0             y = LN(x) + LN''(pos_k) (Eq. 11)
=====================  =======  =========  ======  ============  ==========

(*) A backbone may change a preset: for Swin the paper puts a PE LN in layer
0 for PVG and MPVG too (``preset_overrides``).

``pos_0`` is the raw (resized) PE; ``pos_k`` (k >= 1) is the PE that enters
layer k (Table 5's notation; ``l`` counts layers across all stages).

Staged (hierarchical) backbones such as Swin run the layers in stages of
different token grids and widths. The PE exists only at the first stage; at
every stage boundary it passes through the *same* downsampling module as the
tokens (the backbone hands those modules to :meth:`forward`), so each layer's
``LN'_l`` works at its stage's width and the Eq. 11 term reaches the last
stage's grid and width. A plain ViT is the one-stage case.

The chain never depends on the image, so in eval mode it is computed once
per grid size and reused until a weight it reads changes, and for export
(:func:`fold_pe`) it becomes constants.
"""
import math
from contextlib import contextmanager
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

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
# Where pos_0 comes from: a learnable parameter (DeiT, Swin, CeiT, ViT-Lite),
# a frozen sinusoidal table (T2T-ViT), or a parameter the backbone owns under
# its upstream name and passes to forward() (Swin's ``absolute_pos_embed``).
POS_SOURCES = ('learnable', 'sinusoidal', 'external')


class PEPlan(NamedTuple):
    """What one forward pass adds where; tensors are (1, tokens, dims).

    ``per_layer[l]`` has layer l's token grid and width (they change from
    stage to stage in a staged backbone); ``to_last_norm`` has the last
    stage's.
    """
    to_input: Optional[torch.Tensor]
    per_layer: List[Optional[torch.Tensor]]
    to_last_norm: Optional[torch.Tensor]


def add_pe(tokens: torch.Tensor,
           pe: Optional[torch.Tensor]) -> torch.Tensor:
    """The attention input of a layer: ``LN_l(x) + pe_l`` (Eq. 6, 9)."""
    return tokens if pe is None else tokens + pe


def resolve_pe_cfg(pe_cfg: Optional[dict], num_layers: int,
                   with_cls_token: bool,
                   preset_overrides: Optional[dict] = None) -> dict:
    """Expand ``dict(method=..., **overrides)`` into validated knobs.

    ``preset_overrides`` (``{method: {knob: value}}``) is how a backbone
    changes a preset, e.g. Swin's PVG/MPVG with layer 0.
    """
    pe_cfg = dict(pe_cfg or {})
    method = pe_cfg.pop('method', 'default')
    if method not in PE_METHODS:
        raise ValueError(f'Unknown PE method {method!r}; choose one of '
                         f'{sorted(PE_METHODS)}.')
    knobs = dict(PE_METHODS[method])
    knobs.update((preset_overrides or {}).get(method, {}))
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


def sinusoid_table(num_positions: int, dims: int) -> torch.Tensor:
    """The fixed 1-D sine/cosine table of Vaswani et al. (T2T-ViT's PE)."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    channel = torch.arange(dims)
    angle = position / torch.pow(10000., 2 * (channel // 2) / dims)
    table = torch.where(channel % 2 == 0, angle.sin(), angle.cos())
    return table.float()[None]


class LayerwisePositionEmbedding(BaseModule):
    """An absolute PE and the LayerNorms that deliver it to every layer.

    Args:
        grid_size (tuple): Patch grid (h, w) the PE is stored at.
        embed_dims (int): Width of ``pos_0`` (the first stage's tokens).
        num_layers (int): Number of layers L, over all stages.
        num_extra_tokens (int): Tokens before the patches (1 for a class
            token); they carry a PE row too.
        pe_cfg (dict): ``dict(method='default'|'lape'|'pvg'|'mpvg', **knobs)``.
        norm_cfg (dict): Config of the PE LayerNorms.
        stage_depths (Sequence[int], optional): Layers per stage of a staged
            backbone (sum L); one stage by default.
        stage_dims (Sequence[int], optional): Token width of each stage;
            ``stage_dims[0]`` must be ``embed_dims``.
        pos_source (str): Where ``pos_0`` comes from, see ``POS_SOURCES``.
            ``'external'`` owns no PE: the backbone passes its own
            parameter to :meth:`forward`.
        preset_overrides (dict, optional): Backbone-specific preset changes,
            see :func:`resolve_pe_cfg`.
        interpolate_mode (str): How ``pos_0`` is resized to another grid.
    """

    def __init__(self,
                 grid_size: Tuple[int, int],
                 embed_dims: int,
                 num_layers: int,
                 num_extra_tokens: int = 0,
                 pe_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 stage_depths: Optional[Sequence[int]] = None,
                 stage_dims: Optional[Sequence[int]] = None,
                 pos_source: str = 'learnable',
                 preset_overrides: Optional[dict] = None,
                 interpolate_mode: str = 'bicubic',
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        stage_depths = tuple(stage_depths or (num_layers, ))
        stage_dims = tuple(stage_dims or (embed_dims, ))
        if sum(stage_depths) != num_layers or \
                len(stage_dims) != len(stage_depths) or \
                stage_dims[0] != embed_dims:
            raise ValueError(
                f'Stages {stage_depths} x dims {stage_dims} do not describe '
                f'{num_layers} layers whose first stage is {embed_dims} wide.')
        if pos_source not in POS_SOURCES:
            raise ValueError(f'Unknown pos_source {pos_source!r}; choose one '
                             f'of {POS_SOURCES}.')
        knobs = resolve_pe_cfg(pe_cfg, num_layers, num_extra_tokens > 0,
                               preset_overrides)
        self.method = knobs['method']
        self.add_to_input = knobs['add_to_input']
        self.layerwise = knobs['layerwise']
        self.hierarchical = knobs['hierarchical']
        self.last_norm_pos = knobs['last_norm_pos']
        self.grid_size = tuple(grid_size)
        self.num_layers = num_layers
        self.num_extra_tokens = num_extra_tokens
        self.stage_depths = stage_depths
        self.stage_dims = stage_dims
        self.pos_source = pos_source
        self.interpolate_mode = interpolate_mode

        num_tokens = num_extra_tokens + grid_size[0] * grid_size[1]
        if pos_source == 'learnable':
            self.pos_embed = nn.Parameter(
                torch.zeros(1, num_tokens, embed_dims))
        elif pos_source == 'sinusoidal':
            # A frozen parameter, not a buffer: T2T-ViT counts it in #Params.
            self.pos_embed = nn.Parameter(
                sinusoid_table(num_tokens, embed_dims), requires_grad=False)
        else:
            self.pos_embed = None
        # Keyed by the layer each norm feeds, so checkpoints read "layer 5".
        self.layer_norms = nn.ModuleDict()
        if self.layerwise:
            first = 0 if knobs['include_layer0'] else 1
            for layer in range(first, num_layers):
                self.layer_norms[str(layer)] = build_norm_layer(
                    norm_cfg, self.layer_dims[layer])[1]
        # A separate LN for the PE term of Eq. 11, at the last stage's width:
        # Table 1 counts 2*D more parameters for MPVG than PVG, so it shares
        # nothing with the Last LN.
        self.last_pos_norm = (
            build_norm_layer(norm_cfg, stage_dims[-1])[1]
            if self.last_norm_pos is not None else None)
        self._cache_key = None
        self._cache_plan = None
        # fold_pe(): None, 'record' (next forward stores its plan) or the
        # grid the stored plan belongs to.
        self._fold_state = None
        self._register_load_state_dict_pre_hook(self._resize_loaded_pos_embed)

    def _resize_loaded_pos_embed(self, state_dict, prefix, *args, **kwargs):
        """Resize a checkpoint's ``pos_embed`` stored at another grid (e.g. a
        224-px checkpoint in a 384-px model) to this module's grid, as timm
        and mmpretrain do on load."""
        key = prefix + 'pos_embed'
        if self.pos_embed is None or key not in state_dict or \
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
            loaded, (side, side), self.grid_size, mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        print_log(f'Resized {key} from a {side}x{side} to a '
                  f'{self.grid_size[0]}x{self.grid_size[1]} grid '
                  f'({self.interpolate_mode}).', logger='current')

    @property
    def layer_dims(self) -> List[int]:
        """Token width of each layer."""
        return [dims for depth, dims in zip(self.stage_depths,
                                            self.stage_dims)
                for _ in range(depth)]

    def layers_with_pe(self) -> List[int]:
        return [int(k) for k in self.layer_norms]

    def resized(self, grid_size: Tuple[int, int],
                pos_embed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``pos_0``: the PE interpolated to ``grid_size``."""
        return resize_pos_embed(
            self._source(pos_embed), self.grid_size, grid_size,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)

    def _source(self, pos_embed: Optional[torch.Tensor]) -> torch.Tensor:
        if (pos_embed is None) == (self.pos_source == 'external'):
            raise ValueError(
                f"pos_source={self.pos_source!r}: pass the backbone's PE to "
                'forward() exactly when the source is external.')
        return self.pos_embed if pos_embed is None else pos_embed

    def plan_from(self, pos: torch.Tensor,
                  grid_size: Optional[Tuple[int, int]] = None,
                  downsamples: Sequence[nn.Module] = ()) -> PEPlan:
        """Run the LN chain on a resized ``pos_0`` (no caching).

        ``downsamples[s]`` maps stage s's tokens to stage s + 1's,
        ``(tokens, grid) -> (tokens, grid)``; the PE takes the same path.
        """
        if len(downsamples) != len(self.stage_depths) - 1:
            raise ValueError(
                f'{len(self.stage_depths)} stages need '
                f'{len(self.stage_depths) - 1} downsample modules, got '
                f'{len(downsamples)}.')
        k = self.last_norm_pos
        per_layer: List[Optional[torch.Tensor]] = [None] * self.num_layers
        # The PEs that cross stage boundaries: the hierarchical chain,
        # pos_0 (for non-hierarchical norms) and the Eq. 11 source.
        layerwise = self.layerwise
        carried = dict(
            chain=pos if layerwise and self.hierarchical else None,
            pos0=pos if layerwise and not self.hierarchical else None,
            last=pos if k == 0 else None)
        first = 0
        for stage, depth in enumerate(self.stage_depths):
            if stage > 0:
                grid_before = grid_size
                for name, value in carried.items():
                    if value is not None:
                        carried[name], grid_size = downsamples[stage - 1](
                            value, grid_before)
            for layer in range(first, first + depth):
                if str(layer) in self.layer_norms:
                    norm = self.layer_norms[str(layer)]
                    per_layer[layer] = norm(
                        carried['chain' if self.hierarchical else 'pos0'])
                    if self.hierarchical:
                        carried['chain'] = per_layer[layer]
                if layer == k and k >= 1:
                    carried['last'] = per_layer[layer]
            first += depth
        to_last_norm = None
        if self.last_pos_norm is not None:
            to_last_norm = self.last_pos_norm(carried['last'])
        return PEPlan(pos if self.add_to_input else None, per_layer,
                      to_last_norm)

    def forward(self,
                grid_size: Tuple[int, int],
                pos_embed: Optional[torch.Tensor] = None,
                downsamples: Sequence[nn.Module] = ()) -> PEPlan:
        """The plan for a ``grid_size`` input grid.

        Args:
            grid_size: Patch grid of the first stage.
            pos_embed: The backbone's PE when ``pos_source='external'``.
            downsamples: The backbone's stage-boundary modules.
        """
        grid_size = tuple(grid_size)
        if self._fold_state is not None:
            return self._folded_plan(grid_size, pos_embed, downsamples)
        if self.training or torch.is_grad_enabled() or \
                torch.compiler.is_compiling():
            # Under torch.compile the chain is part of the graph, which
            # reads the weights as inputs: the cache key (data pointers,
            # versions) cannot be traced, and guarding on it would recompile
            # after every optimizer step.
            return self._plan(grid_size, pos_embed, downsamples)
        # Eval without autograd: reuse the chain until a weight changes.
        # Any in-place update (optimizer step, load_state_dict) bumps a
        # tensor's version; moving the module changes its storage.
        weights = list(self.parameters())
        if pos_embed is not None:
            weights.append(pos_embed)
        for module in downsamples:
            weights.extend(module.parameters())
        key = (grid_size, ) + tuple(
            (p.data_ptr(), p._version, p.dtype) for p in weights)
        if key != self._cache_key:
            self._cache_plan = self._plan(grid_size, pos_embed, downsamples)
            self._cache_key = key
        return self._cache_plan

    def _plan(self, grid_size, pos_embed, downsamples) -> PEPlan:
        pos = self.resized(grid_size, pos_embed)
        if not downsamples:  # one stage: the grid is not needed
            return self.plan_from(pos)
        return self.plan_from(pos, grid_size, downsamples)

    # ------------------------------------------------------------- folding
    FOLDED_PREFIX = 'folded_'

    def _folded_plan(self, grid_size, pos_embed, downsamples) -> PEPlan:
        """The plan as buffers: computed by the first call under
        :func:`fold_pe`, returned as is (no op on a weight) afterwards."""
        grid_size = tuple(int(s) for s in grid_size)
        if self._fold_state == 'record':
            with torch.no_grad():
                plan = self._plan(grid_size, pos_embed, downsamples)
            self._fold_state = grid_size
            self._store_folded('to_input', plan.to_input)
            for layer, pe in enumerate(plan.per_layer):
                self._store_folded(f'layer{layer}', pe)
            self._store_folded('to_last_norm', plan.to_last_norm)
        elif grid_size != self._fold_state:
            raise ValueError(
                f'The PE chain is folded for a {self._fold_state} patch grid '
                f'but the input gives {grid_size}: fold it at the input '
                'size you export or run.')
        return PEPlan(
            self._folded('to_input'),
            [self._folded(f'layer{layer}')
             for layer in range(self.num_layers)],
            self._folded('to_last_norm'))

    def _store_folded(self, name: str, value: Optional[torch.Tensor]):
        if value is not None:
            self.register_buffer(self.FOLDED_PREFIX + name,
                                 value.detach().clone(), persistent=False)

    def _folded(self, name: str) -> Optional[torch.Tensor]:
        return self._buffers.get(self.FOLDED_PREFIX + name)

    def _unfold(self):
        self._fold_state = None
        for name in [n for n in self._buffers
                     if n.startswith(self.FOLDED_PREFIX)]:
            del self._buffers[name]


@contextmanager
def fold_pe(model: nn.Module, *example_inputs) -> Iterator[nn.Module]:
    """Within the block, every PE chain in ``model`` is a set of constant
    buffers computed for the grid of ``example_inputs``.

    The chain (resize, the ``LN'_l`` norms, Swin's PatchMerging of the PE,
    the Eq. 11 norm) does not depend on the image, so a traced or exported
    graph needs none of it: ``model(*example_inputs)`` runs once to record
    each plan, later calls return the buffers (an ONNX export stores them as
    initializers). Inputs of another patch grid raise an error inside the
    block; the model is unchanged after it.
    """
    modules = [m for m in model.modules()
               if isinstance(m, LayerwisePositionEmbedding)]
    if not modules:
        raise ValueError(f'{type(model).__name__} has no '
                         'LayerwisePositionEmbedding to fold.')
    try:
        for module in modules:
            module._fold_state = 'record'
        with torch.no_grad():
            model(*example_inputs)
        unused = [m for m in modules if m._fold_state == 'record']
        if unused:
            raise RuntimeError(f'{len(unused)} PE module(s) did not run in '
                               f'the forward pass of {type(model).__name__}.')
        yield model
    finally:
        for module in modules:
            module._unfold()
