"""Record what a PE backbone computes, through hooks only.

The analysis never re-runs the transformer by hand: hooks on the backbone's
own modules see the tensors as the model's forward passes them along, so
whatever a checkpoint (or a wrapper such as an adapter) does is what gets
measured.

What is hooked comes from the backbone contract
(:class:`~mmmpvg.models.pe.PEBackboneMixin`); ``l`` counts layers from 0
over all stages, ``backbone.pe_blocks()[l]``:

* ``pe`` (output): the :class:`PEPlan` of the pass and the patch grid.
* ``layers[l]`` (forward-pre, with kwargs): ``x_l``, the residual stream
  entering layer ``l``, its token grid and the PE handed to it (``None``
  where none); every PE block is called ``block(x, hw_shape, pe)``.
* ``layers[l].ln1`` (output): ``LN_l(x_l)``, the output of the block's
  ``pe_norm``, the token term that meets the PE at the attention input
  ``attn(LN_l(x_l) + pe_l)``.
* ``last_norm`` (input and output): ``x_out``, the output of the last layer,
  and ``LN(x_out)``; ``None`` for a backbone without a Last LN over the
  token map (a ViT-Adapter that does not use it; CeiT, whose Last LN
  normalises the one token the LCA makes, so only its per-layer maps,
  Fig. 4, are recorded). Swin's is the last stage's norm.

A staged backbone (Swin) has one token grid per stage; each layer's grid is
recorded and :meth:`ForwardRecord.patch_grid` lays tokens out on the grid
their number of tokens belongs to.

Layers must run once per pass: window attention (a layer run per window)
is refused rather than measured piecemeal.
"""
from functools import partial
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from ..models.pe import PEBackboneMixin, PEPlan, find_pe_backbone

__all__ = ['ForwardRecord', 'PECapture', 'find_pe_backbone', 'pe_layers',
           'last_norm_of', 'pool_tokens']


class ForwardRecord(NamedTuple):
    """Tensors of one forward pass; tokens are (B, N, C), PEs (1, N, C).

    ``N`` counts the class token (row 0) when the backbone has one.
    """
    plan: PEPlan
    grid_size: Tuple[int, int]
    layer_grids: List[Tuple[int, int]]
    num_extra_tokens: int
    global_pool: str
    layer_inputs: List[torch.Tensor]
    layer_ln1: List[torch.Tensor]
    layer_pe: List[Optional[torch.Tensor]]
    last_norm_input: Optional[torch.Tensor]
    last_norm_output: Optional[torch.Tensor]

    @property
    def output_tokens(self) -> Optional[torch.Tensor]:
        """``y = LN(x_out) [+ LN''(pos_k)]`` (Eq. 4 / 11): what is pooled."""
        if self.last_norm_output is None or self.plan.to_last_norm is None:
            return self.last_norm_output
        return self.last_norm_output + self.plan.to_last_norm

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The backbone's pooling: class token, or the mean of all tokens."""
        return pool_tokens(tokens, self.global_pool)

    def patch_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens -> (B, h, w, C) patch tokens (class token out).

        The grid is the one (of the stages) with N patch tokens.
        """
        patches = tokens[..., self.num_extra_tokens:, :]
        count = patches.shape[-2]
        grid = next((g for g in [self.grid_size, *self.layer_grids]
                     if g[0] * g[1] == count), None)
        if grid is None:
            raise ValueError(f'{count} patch tokens fit no grid of this '
                             'pass.')
        return patches.reshape(*patches.shape[:-2], *grid,
                               patches.shape[-1])


def pool_tokens(tokens: torch.Tensor, global_pool: str) -> torch.Tensor:
    """Pool (..., N, C) tokens as a backbone with ``global_pool`` does."""
    if global_pool == 'cls':
        return tokens[..., 0, :]
    return tokens.mean(dim=-2)


WINDOWS = ('A layer with window attention sees windows, not the image, and '
           'cannot be analysed: use global attention, e.g. --cfg-options '
           'model.backbone.window_attn=False.')


def _detach(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if tensor is None else tensor.detach()


def pe_layers(backbone: PEBackboneMixin
              ) -> List[Tuple[nn.Module, nn.Module]]:
    """(layer, the norm whose output meets the PE) for every layer."""
    return [(block, block.pe_norm) for block in backbone.pe_blocks()]


def last_norm_of(backbone: PEBackboneMixin) -> Optional[nn.Module]:
    """The Last LN over the token map, or None (see the module doc)."""
    if not backbone.last_norm_sees_tokens:
        return None
    return backbone.pe_last_norm()


class PECapture:
    """Context manager that hooks a backbone; :meth:`pop` gives each pass.

    Example::

        with PECapture(backbone) as capture:
            model.extract_feat(images)
            record = capture.pop()
    """

    def __init__(self, backbone: nn.Module):
        if not isinstance(backbone, PEBackboneMixin):
            raise TypeError('PECapture needs an mmmpvg PE backbone, got '
                            f'{type(backbone).__name__}.')
        self.backbone = backbone
        self.layers = pe_layers(backbone)
        self.last_norm = last_norm_of(backbone)
        self._handles = []
        self._clear()

    def __enter__(self) -> 'PECapture':
        backbone = self.backbone
        self._handles.append(backbone.pe.register_forward_hook(self._on_pe))
        for index, (layer, ln1) in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(
                partial(self._on_layer, index), with_kwargs=True))
            self._handles.append(ln1.register_forward_hook(
                partial(self._on_ln1, index)))
        if self.last_norm is not None:
            self._handles.append(
                self.last_norm.register_forward_hook(self._on_last_norm))
        return self

    def __exit__(self, *exc_info):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _clear(self):
        num_layers = len(self.layers)
        self._pe = None
        self._layers = [None] * num_layers
        self._ln1 = [None] * num_layers
        self._last_norm = None

    @staticmethod
    def _check_unset(value, what: str):
        if value is not None:
            raise RuntimeError(
                f'{what} ran twice before pop(): call pop() after every '
                f'forward pass. {WINDOWS}')

    def _on_pe(self, module, args, plan):
        self._check_unset(self._pe, 'pe')
        self._pe = (PEPlan(_detach(plan.to_input),
                           [_detach(pe) for pe in plan.per_layer],
                           _detach(plan.to_last_norm)), tuple(args[0]))

    def _on_layer(self, index, module, args, kwargs):
        self._check_unset(self._layers[index], f'layers[{index}]')
        # Every PE block is called block(x, hw_shape, pe).
        x = args[0] if args else kwargs['x']
        grid = tuple(args[1] if len(args) > 1 else kwargs['hw_shape'])
        pe = args[2] if len(args) > 2 else kwargs.get('pe')
        (h, w) = grid
        tokens = h * w + self.backbone.num_extra_tokens
        if x.shape[-2] != tokens:
            raise RuntimeError(
                f'layers[{index}] got {x.shape[-2]} tokens, not the '
                f'{tokens} of the {h}x{w} patch grid. {WINDOWS}')
        self._layers[index] = (x.detach(), _detach(pe), grid)

    def _on_ln1(self, index, module, args, output):
        self._check_unset(self._ln1[index], f'layers[{index}].ln1')
        self._ln1[index] = output.detach()

    def _on_last_norm(self, module, args, output):
        self._check_unset(self._last_norm, 'last_norm')
        self._last_norm = (args[0].detach(), output.detach())

    def pop(self) -> ForwardRecord:
        """The tensors of the pass since the last ``pop``; resets."""
        slots = {'pe': self._pe}
        if self.last_norm is not None:
            slots['last_norm'] = self._last_norm
        slots.update((f'layers[{i}]', v) for i, v in enumerate(self._layers))
        slots.update((f'layers[{i}].ln1', v) for i, v in enumerate(self._ln1))
        missing = [name for name, value in slots.items() if value is None]
        if missing:
            raise RuntimeError(
                f'No forward pass reached {missing}: run the model (e.g. '
                '`model.extract_feat(inputs)`) inside the capture first.')
        plan, grid_size = self._pe
        last_in, last_out = self._last_norm or (None, None)
        backbone = self.backbone
        layer_grids = [grid for _, _, grid in self._layers]
        record = ForwardRecord(
            plan=plan,
            grid_size=grid_size,
            layer_grids=layer_grids,
            num_extra_tokens=backbone.num_extra_tokens,
            global_pool=backbone.global_pool,
            layer_inputs=[x for x, _, _ in self._layers],
            layer_ln1=list(self._ln1),
            layer_pe=[pe for _, pe, _ in self._layers],
            last_norm_input=last_in,
            last_norm_output=last_out)
        self._clear()
        return record
