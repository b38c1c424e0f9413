"""Parameters and FLOPs per module type, with multi-scale deformable
attention (MSDA) counted by hand.

FLOPs follow fvcore's convention (one multiply-add = one FLOP, as the
papers' GFLOPs). The tracer-based counters (mmengine's ``FlopAnalyzer``, a
port of fvcore's) count the linear layers around the deformable attention,
4 per channel of each ``grid_sample`` (bilinear sampling) and nothing of the
weighted sum that aggregates the samples (element-wise ``mul`` + ``sum``,
which they skip). So the tracer's ``grid_sampler`` count is replaced by the
whole sampling + aggregation of every
:class:`~mmmpvg.adapter.ms_deform_attn.MSDeformAttn` call, computed from its
shapes (:func:`msda_flops`) and reported as its own row. Neither counter
knows ``scaled_dot_product_attention`` (the ViT's fused attention); it is
counted here as its two matrix products, ``q @ k^T`` and ``attn @ v``.
"""
from collections import defaultdict
from typing import Dict, List, NamedTuple, Optional

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape

from ..adapter.ms_deform_attn import MSDeformAttn
from ..models.pe import fold_pe, pe_backbones

# A bilinear sample reads 4 neighbours (4 multiply-adds per channel);
# aggregation weights each sample once (1 multiply-add per channel).
BILINEAR_MACS = 4
AGGREGATION_MACS = 1
MSDA_ROW = 'MSDeformAttn sampling + aggregation (analytic)'
SDPA_OP = 'aten::scaled_dot_product_attention'
GRID_SAMPLE_OP = 'aten::grid_sampler'


def sdpa_flop_jit(inputs, outputs) -> int:
    """``softmax(q k^T) v``: (..., Nq, d) x (..., Nk, d) and
    (..., Nq, Nk) x (..., Nk, dv) multiply-adds."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for size in q[:-2]:
        batch *= size
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def msda_flops(batch: int, num_queries: int, num_levels: int,
               num_points: int, value_dims: int) -> int:
    """Sampling + aggregation of one MSDA call: every query samples
    ``num_levels * num_points`` locations per head over the head's
    channels, ``value_dims`` channels over all heads."""
    samples = batch * num_queries * num_levels * num_points
    return samples * value_dims * (BILINEAR_MACS + AGGREGATION_MACS)


class Complexity(NamedTuple):
    params: Dict[str, int]       # per module type
    flops: Dict[str, int]        # per module type, tracer-counted
    msda_flops: int              # the analytic MSDA term
    unsupported: Dict[str, int]  # ops the tracer skipped, with counts
    fvcore_flops: Optional[int]  # fvcore's own total, for the cross-check
    fvcore_grid_sample: Optional[int]  # the part of it on grid_sample

    @property
    def total_params(self) -> int:
        return sum(self.params.values())

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values()) + self.msda_flops


def msda_calls(model: nn.Module, inputs) -> List[int]:
    """:func:`msda_flops` of every MSDA call in one forward."""
    counts = []

    def count(module, args, _):
        query = args[0]
        counts.append(msda_flops(
            query.shape[0], query.shape[1], module.num_levels,
            module.num_points, module.value_proj.out_features))

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, MSDeformAttn)]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return counts


def own_by_type(model: nn.Module, per_module: Dict[str, int]):
    """Per-module totals (each including its children) -> each module's
    own share, summed per module type."""
    by_type = defaultdict(int)
    for name, module in model.named_modules():
        own = per_module.get(name, 0) - sum(
            per_module.get(f'{name}.{child}' if name else child, 0)
            for child, _ in module.named_children())
        if own:
            by_type[type(module).__name__] += own
    return dict(by_type)


def params_by_type(model: nn.Module) -> Dict[str, int]:
    by_type = defaultdict(int)
    for module in model.modules():
        count = sum(p.numel() for p in module.parameters(recurse=False))
        if count:
            by_type[type(module).__name__] += count
    return dict(by_type)


def _quiet(analyzer):
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer.set_op_handle(SDPA_OP, sdpa_flop_jit)


def fvcore_count(model: nn.Module, img: torch.Tensor):
    """fvcore's (total, grid_sample part), or (None, None) without it."""
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        return None, None
    analyzer = _quiet(FlopCountAnalysis(model, (img, )))
    return analyzer.total(), analyzer.by_operator().get('grid_sampler', 0)


def complexity(model: nn.Module, img: torch.Tensor,
               cross_check: bool = True) -> Complexity:
    """Count ``model`` (a module of one image batch, e.g.
    :func:`mmmpvg.deploy.export_module`) at ``img``, the PE chain folded
    as deployed."""
    model.eval()
    with fold_pe(model, img) if pe_backbones(model) else torch.no_grad():
        analyzer = _quiet(FlopAnalyzer(model, (img, )))
        # Counted whole by msda_flops instead.
        analyzer.set_op_handle(GRID_SAMPLE_OP, lambda *_: 0)
        flops = own_by_type(model, analyzer.by_module())
        unsupported = dict(analyzer.unsupported_ops())
        msda = sum(msda_calls(model, (img, )))
        fvcore_total, fvcore_grid = fvcore_count(model, img) \
            if cross_check else (None, None)
    return Complexity(params_by_type(model), flops, msda, unsupported,
                      fvcore_total, fvcore_grid)


def format_table(result: Complexity) -> str:
    rows = sorted(set(result.params) | set(result.flops),
                  key=lambda t: -result.flops.get(t, 0))
    lines = [f"{'module type':<44} {'params':>12} {'GFLOPs':>10}"]
    for name in rows:
        lines.append(f'{name:<44} {result.params.get(name, 0):>12,} '
                     f'{result.flops.get(name, 0) / 1e9:>10.4f}')
    if result.msda_flops:
        lines.append(f"{MSDA_ROW:<44} {'':>12} "
                     f'{result.msda_flops / 1e9:>10.4f}')
    lines.append(f"{'total':<44} {result.total_params:>12,} "
                 f'{result.total_flops / 1e9:>10.4f}')
    if result.fvcore_flops is not None:
        traced = sum(result.flops.values())
        fvcore = result.fvcore_flops - result.fvcore_grid_sample
        verdict = 'equal' if traced == fvcore else 'DIFFERENT'
        line = f'cross-check: fvcore counts {result.fvcore_flops / 1e9:.4f}'
        if result.msda_flops:
            line += (f', {result.fvcore_grid_sample / 1e9:.4f} of them on '
                     'grid_sample (bilinear only, no aggregation), '
                     f'{fvcore / 1e9:.4f} without')
        lines.append(f'{line}; traced rows here {traced / 1e9:.4f} '
                     f'({verdict})')
    if result.unsupported:
        lines.append('not counted (element-wise and other ops both counters '
                     'skip): ' + ', '.join(
                         f'{op} x{n}' for op, n in
                         sorted(result.unsupported.items())))
    return '\n'.join(lines)
