"""The numbers behind the paper's analysis figures (Fig. 2, 4, 6, 7, 8).

Definitions (``l`` counts layers from 0; ``L`` layers in all; maps are
tokens x dims, the class token is row 0 when there is one):

* token map of layer ``l``: ``LN_l(x_l)``, the layer's ``ln1`` output, i.e.
  the token embedding *after its LN* as it meets the PE in
  ``attn(LN_l(x_l) + pe_l)``, averaged over the images.
* PE map of layer ``l``: ``pe_l``, the PE handed to layer ``l`` (after its
  own LN ``LN'_l``); image independent. Default models and layer 0 of
  PVG/MPVG have none; their only PE is ``pos_0`` added to the input.
* before / after the Last LN: ``x_out`` (output of the last layer, the
  paper's ``x_{L+1}``) and ``LN(x_out)``; MPVG's output is
  ``y = LN(x_out) + LN''(pos_k)`` (Eq. 11).
* correlation of layer ``l``: Pearson's r over all tokens x dims entries
  between the image-averaged token map and ``pe_l``; after the Last LN
  between the averaged ``LN(x_out)`` and ``LN''(pos_k)``. The mean over
  images of the per-image r is kept beside it.
* pooled representation: the class token (``global_pool='cls'``) or the
  mean over tokens (``'avg'``), as the backbone pools.
"""
from typing import Iterable, List, NamedTuple, Optional

import torch

from torch import nn

from .capture import (ForwardRecord, last_norm_of, pe_layers,
                      pool_tokens)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson's r over the last two dims (tokens x dims), in float64.

    Leading dims broadcast, so a batch of maps against one PE gives one r
    per map. A constant map has no correlation: the result is NaN.
    """
    a, b = torch.broadcast_tensors(a.double(), b.double())
    a = a.flatten(-2)
    b = b.flatten(-2)
    a = a - a.mean(dim=-1, keepdim=True)
    b = b - b.mean(dim=-1, keepdim=True)
    return (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over the last dim, in float64."""
    return torch.nn.functional.cosine_similarity(
        a.double(), b.double(), dim=-1, eps=1e-12)


def token_norms(record: ForwardRecord, tokens: torch.Tensor) -> torch.Tensor:
    """L2 norm over dims of each patch token: (B, N, C) -> (B, h, w)."""
    return record.patch_grid(tokens).double().norm(dim=-1)


class _Mean:
    """Running mean over images of per-image tensors (first dim = images)."""

    def __init__(self):
        self.total = None
        self.count = 0

    def add(self, batch: torch.Tensor):
        batch_sum = batch.double().sum(dim=0).cpu()
        self.total = (batch_sum if self.total is None else
                      self.total + batch_sum)
        self.count += batch.shape[0]

    def mean(self) -> torch.Tensor:
        return self.total / self.count


def _squeeze(pe: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if pe is None else pe[0].double().cpu()


class LastNormSummary(NamedTuple):
    """The Last LN averaged over the images; maps are (N, C) float64."""
    global_pool: str
    before: torch.Tensor
    after: torch.Tensor
    pe: Optional[torch.Tensor]
    pearson_per_image: Optional[float]
    cosine_per_image: float
    cosine_ln_only_per_image: float
    gamma: torch.Tensor
    beta: torch.Tensor

    def pearson(self) -> Optional[float]:
        """r(mean LN(x_out), LN''(pos_k)); None without PE in the Last LN."""
        return None if self.pe is None else pearson(self.after, self.pe).item()

    @property
    def output_tokens(self) -> torch.Tensor:
        """Mean of ``y``, the backbone's output tokens."""
        return self.after if self.pe is None else self.after + self.pe

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        return pool_tokens(tokens, self.global_pool)

    def cosine_of_means(self, ln_only: bool = False) -> float:
        """cos(pooled mean before, pooled mean after) the Last LN.

        "After" is ``y`` (with MPVG's PE), or ``LN(x_out)`` if ``ln_only``.
        """
        after = self.after if ln_only else self.output_tokens
        return cosine(self.pooled(self.before), self.pooled(after)).item()

    def beta_variance(self) -> float:
        """Population variance (divide by C) of the Last LN's beta."""
        return self.beta.var(unbiased=False).item()


class PESummary(NamedTuple):
    """Image-averaged maps of one model; maps are (N, C) float64 on CPU.

    ``last_norm`` is None for a backbone that does not run its Last LN.
    """
    method: str
    global_pool: str
    num_extra_tokens: int
    grid_size: tuple
    num_images: int
    token_ln1: List[torch.Tensor]
    token_input: List[torch.Tensor]
    layer_pe: List[Optional[torch.Tensor]]
    input_pe: Optional[torch.Tensor]
    pearson_per_image: List[Optional[float]]
    last_norm: Optional[LastNormSummary]

    @property
    def layers_with_pe(self) -> List[int]:
        return [i for i, pe in enumerate(self.layer_pe) if pe is not None]

    def layer_pearson(self) -> List[Optional[float]]:
        """r(mean over images of LN_l(x_l), pe_l) per layer; None: no PE."""
        return [None if pe is None else pearson(tokens, pe).item()
                for tokens, pe in zip(self.token_ln1, self.layer_pe)]

    def require_last_norm(self) -> LastNormSummary:
        if self.last_norm is None:
            raise ValueError(
                f'This {self.method} backbone has no Last LN over the '
                'token map (a ViT-Adapter without vit_last_norm; CeiT, whose '
                'Last LN sees only the LCA token): nothing to show '
                'before/after it.')
        return self.last_norm


def summarize(backbone: nn.Module,
              records: Iterable[ForwardRecord]) -> PESummary:
    """Average the captured passes of ``backbone`` over all their images.

    Layers of a staged backbone (Swin) keep their own grid and width.
    """
    num_layers = len(pe_layers(backbone))
    ln1 = [_Mean() for _ in range(num_layers)]
    inputs = [_Mean() for _ in range(num_layers)]
    layer_r = [_Mean() for _ in range(num_layers)]
    before, after, last_r = _Mean(), _Mean(), _Mean()
    cos_out, cos_ln = _Mean(), _Mean()
    first = None
    for record in records:
        if first is None:
            first = record
        elif record.grid_size != first.grid_size:
            raise ValueError(
                f'Images give patch grids {first.grid_size} and '
                f'{record.grid_size}: token maps can only be averaged over '
                'images of one size (resize them, e.g. with --img-size).')
        for layer in range(num_layers):
            ln1[layer].add(record.layer_ln1[layer])
            inputs[layer].add(record.layer_inputs[layer])
            pe = record.layer_pe[layer]
            if pe is not None:
                layer_r[layer].add(pearson(record.layer_ln1[layer], pe))
        if record.last_norm_output is None:
            continue
        before.add(record.last_norm_input)
        after.add(record.last_norm_output)
        if record.plan.to_last_norm is not None:
            last_r.add(pearson(record.last_norm_output,
                               record.plan.to_last_norm))
        pooled_before = record.pool(record.last_norm_input)
        cos_out.add(cosine(pooled_before,
                           record.pool(record.output_tokens)))
        cos_ln.add(cosine(pooled_before,
                          record.pool(record.last_norm_output)))
    if first is None:
        raise ValueError('No images reached the model: nothing to average.')
    last_norm = None
    if before.count:
        norm = last_norm_of(backbone)
        last_norm = LastNormSummary(
            global_pool=backbone.global_pool,
            before=before.mean(),
            after=after.mean(),
            pe=_squeeze(first.plan.to_last_norm),
            pearson_per_image=last_r.mean().item() if last_r.count else None,
            cosine_per_image=cos_out.mean().item(),
            cosine_ln_only_per_image=cos_ln.mean().item(),
            gamma=norm.weight.detach().double().cpu(),
            beta=norm.bias.detach().double().cpu())
    return PESummary(
        method=backbone.pe_method,
        global_pool=backbone.global_pool,
        num_extra_tokens=backbone.num_extra_tokens,
        grid_size=first.grid_size,
        num_images=ln1[0].count,
        token_ln1=[m.mean() for m in ln1],
        token_input=[m.mean() for m in inputs],
        layer_pe=[_squeeze(pe) for pe in first.layer_pe],
        input_pe=_squeeze(first.plan.to_input),
        pearson_per_image=[m.mean().item() if m.count else None
                           for m in layer_r],
        last_norm=last_norm)
