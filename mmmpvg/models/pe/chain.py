"""The LN chain that delivers ``pos_0`` to every layer (Eq. 6, 9, 11).

Staged (hierarchical) backbones such as Swin run the layers in stages of
different token grids and widths. The PE exists only at the first stage; at
every stage boundary it passes through the *same* downsampling module as the
tokens (the backbone hands those modules to :meth:`forward`), so each layer's
``LN'_l`` works at its stage's width and the Eq. 11 term reaches the last
stage's grid and width. A plain ViT is the one-stage case.

The chain never depends on the image. For export :func:`~.fold.fold_pe`
turns it into constants; in eval mode without autograd it is computed once
and reused while the weights it reads hold the same values (at batch 1 it
costs 1-8 % of a forward, Swin's PatchMergings the most:
``docs/benchmarks/pe_chain_cost.py``). The cache compares the values
themselves, not versions or pointers, because writes through ``.data``
(how EMA swaps weights) change neither.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule

from .methods import resolve_pe_cfg
from .sources import resize_pos_embed


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


def _is_compiling() -> bool:
    # torch.compiler.is_compiling is torch >= 2.3; torch._dynamo's before.
    check = getattr(torch.compiler, 'is_compiling', None)
    return bool(check() if check else torch._dynamo.is_compiling())


def _autocast_enabled(device_type: str) -> bool:
    try:  # torch >= 2.4
        return torch.is_autocast_enabled(device_type)
    except TypeError:
        return (torch.is_autocast_cpu_enabled() if device_type == 'cpu'
                else torch.is_autocast_enabled())


class PlanCache:
    """The last eval plan and a copy of every weight value it came from."""

    def __init__(self):
        self.grid_size = None
        self.weights: Tuple[torch.Tensor, ...] = ()
        self.plan: Optional[PEPlan] = None

    def lookup(self, grid_size, weights: Sequence[torch.Tensor]
               ) -> Optional[PEPlan]:
        if grid_size != self.grid_size or len(weights) != len(self.weights):
            return None
        for weight, copy in zip(weights, self.weights):
            if (weight.shape, weight.dtype, weight.device) != (
                    copy.shape, copy.dtype, copy.device) or \
                    not torch.equal(weight, copy):
                return None
        return self.plan

    def store(self, grid_size, weights: Sequence[torch.Tensor],
              plan: PEPlan):
        self.grid_size = grid_size
        self.weights = tuple(w.detach().clone() for w in weights)
        self.plan = plan


class LayerwisePositionEmbedding(BaseModule):
    """The LayerNorms that deliver a backbone's ``pos_0`` to every layer.

    Args:
        grid_size (tuple): Patch grid (h, w) ``pos_0`` is stored at.
        num_extra_tokens (int): Tokens before the patches (1 for a class
            token); they carry a PE row too.
        stage_depths (Sequence[int]): Layers per stage (one stage for a
            plain ViT); their sum is the number of layers L.
        stage_dims (Sequence[int]): Token width of each stage.
        pe_cfg (dict): ``dict(method='default'|'lape'|'pvg'|'mpvg', **knobs)``.
        norm_cfg (dict): Config of the PE LayerNorms.
        preset_overrides (dict, optional): The family's preset changes, see
            :func:`~.methods.resolve_pe_cfg`.
        interpolate_mode (str): How ``pos_0`` is resized to another grid.
    """

    def __init__(self,
                 grid_size: Tuple[int, int],
                 num_extra_tokens: int,
                 stage_depths: Sequence[int],
                 stage_dims: Sequence[int],
                 pe_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 preset_overrides: Optional[dict] = None,
                 interpolate_mode: str = 'bicubic',
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.stage_depths = tuple(stage_depths)
        self.stage_dims = tuple(stage_dims)
        if len(self.stage_dims) != len(self.stage_depths) or \
                not self.stage_depths:
            raise ValueError(f'Stages {self.stage_depths} x dims '
                             f'{self.stage_dims} describe no layers.')
        self.num_layers = sum(self.stage_depths)
        knobs = resolve_pe_cfg(pe_cfg, preset_overrides, self.num_layers,
                               num_extra_tokens > 0)
        self.method = knobs['method']
        self.add_to_input = knobs['add_to_input']
        self.layerwise = knobs['layerwise']
        self.hierarchical = knobs['hierarchical']
        self.last_norm_pos = knobs['last_norm_pos']
        self.grid_size = tuple(grid_size)
        self.num_extra_tokens = num_extra_tokens
        self.interpolate_mode = interpolate_mode
        # Keyed by the layer each norm feeds, so checkpoints read "layer 5".
        self.layer_norms = nn.ModuleDict()
        if self.layerwise:
            first = 0 if knobs['include_layer0'] else 1
            for layer in range(first, self.num_layers):
                self.layer_norms[str(layer)] = build_norm_layer(
                    norm_cfg, self.layer_dims[layer])[1]
        # A separate LN for the PE term of Eq. 11, at the last stage's width:
        # Table 1 counts 2*D more parameters for MPVG than PVG, so it shares
        # nothing with the Last LN.
        self.last_pos_norm = (
            build_norm_layer(norm_cfg, self.stage_dims[-1])[1]
            if self.last_norm_pos is not None else None)
        # fold_pe(): None, 'record' (next forward stores its plan) or the
        # grid the stored plan belongs to.
        self._fold_state = None
        self._eval_cache = PlanCache()

    @property
    def layer_dims(self) -> List[int]:
        """Token width of each layer."""
        return [dims for depth, dims in zip(self.stage_depths,
                                            self.stage_dims)
                for _ in range(depth)]

    def layers_with_pe(self) -> List[int]:
        return [int(k) for k in self.layer_norms]

    def resized(self, pos_embed: torch.Tensor,
                grid_size: Tuple[int, int]) -> torch.Tensor:
        """``pos_0``: the PE interpolated to ``grid_size``."""
        return resize_pos_embed(pos_embed, self.grid_size, grid_size,
                                mode=self.interpolate_mode,
                                num_extra_tokens=self.num_extra_tokens)

    def plan_from(self, pos: torch.Tensor,
                  grid_size: Optional[Tuple[int, int]] = None,
                  downsamples: Sequence[nn.Module] = ()) -> PEPlan:
        """Run the LN chain on a resized ``pos_0``.

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
                pos_embed: torch.Tensor,
                downsamples: Sequence[nn.Module] = ()) -> PEPlan:
        """The plan for a ``grid_size`` input grid.

        Args:
            grid_size: Patch grid of the first stage.
            pos_embed: The backbone's ``pos_0`` at :attr:`grid_size`.
            downsamples: The backbone's stage-boundary modules.
        """
        grid_size = tuple(grid_size)
        if self._fold_state is not None:
            return self._folded_plan(grid_size, pos_embed, downsamples)
        if self.training or torch.is_grad_enabled() or _is_compiling() or \
                _autocast_enabled(pos_embed.device.type):
            # A compiled graph reads the weights as inputs; autocast
            # changes the plan's dtype.
            return self._plan(grid_size, pos_embed, downsamples)
        weights = [pos_embed, *self.parameters()]
        for module in downsamples:
            weights.extend(module.parameters())
            weights.extend(module.buffers())
        plan = self._eval_cache.lookup(grid_size, weights)
        if plan is None:
            plan = self._plan(grid_size, pos_embed, downsamples)
            self._eval_cache.store(grid_size, weights, plan)
        return plan

    def _plan(self, grid_size, pos_embed, downsamples) -> PEPlan:
        pos = self.resized(pos_embed, grid_size)
        if not downsamples:  # one stage: the grid is not needed
            return self.plan_from(pos)
        return self.plan_from(pos, grid_size, downsamples)

    # ------------------------------------------------------------- folding
    FOLDED_PREFIX = 'folded_'

    def _folded_plan(self, grid_size, pos_embed, downsamples) -> PEPlan:
        """The plan as buffers: computed by the first call under
        :func:`~.fold.fold_pe`, returned as is (no op on a weight)
        afterwards."""
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
