"""ONNX export of mmmpvg models with the PE chain folded into constants.

What exports, per task (the graph takes the *normalised* image, i.e. the
output of the model's data preprocessor, as mmdeploy's graphs do):

* classification: the whole ``ImageClassifier`` (backbone, neck, head) up to
  the class scores before softmax;
* segmentation: the ``EncoderDecoder``'s backbone, neck and decode head up
  to the decode head's logits (1/4 of the input; resizing to the image and
  the argmax stay outside, and so does the training-only auxiliary head);
* detection: the two-stage detector's backbone, neck (FPN) and the RPN
  head's dense outputs (objectness and box deltas per level). Proposal
  decoding + NMS, RoIAlign and the RoI box/mask heads do not export with
  ``torch.onnx`` alone: they need mmcv ops (``nms``, ``RoIAlign``) without
  ONNX symbolics and data-dependent box counts, which is what mmdeploy's
  rewriters and custom-op library exist for.
"""
import functools
import inspect
from collections import Counter
from contextlib import ExitStack, contextmanager
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from torch.nn.modules.utils import _pair

from ..models.pe import LayerwisePositionEmbedding, fold_pe

TASKS = ('mmpretrain', 'mmdet', 'mmseg')
EXPORT_PARTS = {
    'mmpretrain': 'classifier: backbone + neck + head (class scores)',
    'mmdet': 'backbone + FPN features + RPN head objectness/box deltas',
    'mmseg': 'backbone + neck + decode head (logits at 1/4 scale)',
}
# grid_sample (the PyTorch path of the deformable attention) is in ONNX
# from opset 16; LayerNormalization from 17.
MIN_OPSET = 17


def model_task(cfg: Config) -> str:
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(f'Config default_scope {scope!r} is none of {TASKS} '
                         '(classification, detection, segmentation).')
    return scope


def load_model(config, checkpoint: Optional[str] = None,
               cfg_options: Optional[dict] = None) -> Tuple[nn.Module, str]:
    """(model in eval mode on CPU, task) with the library's own loader."""
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    task = model_task(cfg)
    if task == 'mmpretrain':
        from mmpretrain.apis import get_model
        model = get_model(cfg, pretrained=checkpoint or False, device='cpu')
    elif task == 'mmdet':
        from mmdet.apis import init_detector
        model = init_detector(cfg, checkpoint, device='cpu')
    else:
        from mmseg.apis import init_model
        model = init_model(cfg, checkpoint, device='cpu')
    return revert_sync_batchnorm(model).eval(), task


class ClassifierGraph(nn.Module):

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, img):
        return self.model(img, mode='tensor')


class DetectorGraph(nn.Module):
    """Backbone + neck features, then the RPN head's dense maps."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, img):
        feats = self.model.extract_feat(img)
        outs = list(feats)
        if getattr(self.model, 'rpn_head', None) is not None:
            scores, deltas = self.model.rpn_head(feats)
            outs += list(scores) + list(deltas)
        return tuple(outs)


class SegmentorGraph(nn.Module):

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, img):
        # The decode head called as a module (EncoderDecoder._forward calls
        # its .forward), so FLOP counters attribute its ops to it.
        return self.model.decode_head(self.model.extract_feat(img))


GRAPHS = dict(mmpretrain=ClassifierGraph, mmdet=DetectorGraph,
              mmseg=SegmentorGraph)


def export_module(model: nn.Module, task: str) -> nn.Module:
    """The part of ``model`` that exports, as a module of one image batch."""
    return GRAPHS[task](model).eval()


def output_names(task: str, model: nn.Module, num_outputs: int):
    if task == 'mmpretrain':
        return ['scores']
    if task == 'mmseg':
        return ['seg_logits']
    levels = num_outputs
    if getattr(model, 'rpn_head', None) is not None:
        levels = num_outputs // 3
    names = [f'feat{i}' for i in range(levels)]
    if levels != num_outputs:
        names += [f'rpn_cls{i}' for i in range(levels)]
        names += [f'rpn_reg{i}' for i in range(levels)]
    return names


@contextmanager
def fixed_adaptive_pools(graph: nn.Module, img: torch.Tensor):
    """Within: every ``AdaptiveAvgPool2d`` (UperNet's PPM) is the
    ``AvgPool2d`` it equals at ``img``'s size.

    The legacy exporter maps adaptive pooling only when it can read the
    input size, which a dynamic batch axis hides; at a fixed H, W each pool
    is a plain average pool with kernel = stride = input / output, where the
    output size divides the input.
    """
    sizes = {}
    pools = [m for m in graph.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    hooks = [m.register_forward_pre_hook(
        lambda mod, args: sizes.__setitem__(mod, args[0].shape[-2:]))
        for m in pools]
    run_hooked(graph, img, hooks)
    swaps = []
    for parent in list(graph.modules()):
        for name, child in parent.named_children():
            if child not in sizes:
                continue
            out = _pair(child.output_size)
            size = tuple(sizes[child])
            if any(o is None or i % o for i, o in zip(size, out)):
                raise ValueError(
                    f'{type(parent).__name__} pools a {size[0]}x{size[1]} '
                    f'map to {out[0]}x{out[1]}: ONNX has adaptive pooling '
                    'only where the sizes divide. Export at an input size '
                    'whose coarsest map is a multiple of every pooled size '
                    "(UperNet's (1, 2, 3, 6) at 1/32: sides that are "
                    'multiples of 192).')
            kernel = tuple(i // o for i, o in zip(size, out))
            swaps.append((parent, name, child))
            setattr(parent, name, nn.AvgPool2d(kernel, kernel))
    try:
        yield graph
    finally:
        for parent, name, child in swaps:
            setattr(parent, name, child)


def _window_reverse(windows, H, W, window_size):
    """mmpretrain's ``ShiftWindowMSA.window_reverse`` without ``int()`` of
    the batch size, which the tracer would store as a constant."""
    x = windows.view(-1, H // window_size, W // window_size, window_size,
                     window_size, windows.shape[-1])
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W,
                                                         windows.shape[-1])


@contextmanager
def batch_agnostic_windows():
    """Within: Swin's window attention traces with a dynamic batch axis."""
    from mmpretrain.models.utils.attention import ShiftWindowMSA
    original = ShiftWindowMSA.__dict__['window_reverse']
    ShiftWindowMSA.window_reverse = staticmethod(_window_reverse)
    try:
        yield
    finally:
        ShiftWindowMSA.window_reverse = original


def _attention_with_scale(query, key, value, dropout_p=0., *, scale):
    # Exported in eval mode, where mmpretrain's attention dropout is 0.
    attn = (query @ key.transpose(-2, -1) * scale).softmax(dim=-1)
    return attn @ value


@contextmanager
def exportable_attention_scales(graph: nn.Module):
    """Within, on torch < 2.5: attention that calls
    ``F.scaled_dot_product_attention`` with an explicit ``scale`` (T2T-ViT)
    computes it as plain matmuls and softmax, which the exporter of those
    versions maps (it fails on a float scale: pytorch/pytorch#125158)."""
    swaps = []
    if torch.__version__ < (2, 5):
        for module in graph.modules():
            call = getattr(module, 'scaled_dot_product_attention', None)
            if (isinstance(call, functools.partial)
                    and call.func is F.scaled_dot_product_attention
                    and 'scale' in call.keywords):
                swaps.append((module, call))
                module.scaled_dot_product_attention = functools.partial(
                    _attention_with_scale, scale=call.keywords['scale'])
    try:
        yield
    finally:
        for module, call in swaps:
            module.scaled_dot_product_attention = call


def export_onnx(model: nn.Module, task: str, out_file: str,
                shape: Sequence[int], opset: int = MIN_OPSET,
                batch_size: int = 1, fold: bool = True) -> nn.Module:
    """Export ``model``'s exportable part (:func:`export_module`) to ONNX.

    The batch axis is dynamic; H and W are fixed to ``shape``: with ``fold``
    (the default) the PE chain is constants for that patch grid, and without
    it the tracer still records the PE resize (mmpretrain's
    ``resize_pos_embed``), Swin's window padding and the adapter's level
    shapes as Python numbers. ``fold=False`` keeps the chain's norms in the
    graph (for inspection). Returns the exported module.
    """
    if opset < MIN_OPSET:
        raise ValueError(f'opset {opset} < {MIN_OPSET}: the deformable '
                         'attention needs GridSample (16) and the norms '
                         'LayerNormalization (17).')
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise ValueError(f'shape must be (H, W), got {shape}.')
    graph = export_module(model, task)
    img = torch.randn(batch_size, 3, *shape)
    with torch.no_grad():
        num_outputs = len(_as_tuple(graph(img)))
    names = output_names(task, model, num_outputs)
    axes = {name: {0: 'batch'} for name in ['input', *names]}
    export_kwargs = dict(
        input_names=['input'], output_names=names, dynamic_axes=axes,
        opset_version=opset)
    if 'dynamo' in inspect.signature(torch.onnx.export).parameters:
        export_kwargs['dynamo'] = False  # torch >= 2.5 has two exporters
    with ExitStack() as stack:
        stack.enter_context(fixed_adaptive_pools(graph, img))
        stack.enter_context(batch_agnostic_windows())
        stack.enter_context(exportable_attention_scales(graph))
        if fold:
            stack.enter_context(fold_pe(graph, img))
        else:
            # Grad on: the eval plan cache must not hand the tracer its
            # plan as constants.
            stack.enter_context(torch.enable_grad())
        torch.onnx.export(graph, (img, ), out_file, **export_kwargs)
    return graph


def layernorm_calls(graph: nn.Module, img: torch.Tensor) -> Counter:
    """LayerNorm calls in one uncached forward: ``'pe'`` inside a PE chain
    (its norms and Swin's PatchMerging norms on the PE), ``'token'`` the
    rest."""
    counts = Counter(token=0, pe=0)
    depth = Counter(pe=0)

    def enter_pe(*_):
        depth['pe'] += 1

    def leave_pe(*_):
        depth['pe'] -= 1

    def count(*_):
        counts['pe' if depth['pe'] else 'token'] += 1

    hooks = []
    for m in graph.modules():
        if isinstance(m, LayerwisePositionEmbedding):
            hooks.append(m.register_forward_pre_hook(enter_pe))
            hooks.append(m.register_forward_hook(leave_pe))
        elif isinstance(m, nn.LayerNorm):
            hooks.append(m.register_forward_hook(count))
    run_hooked(graph, img, hooks, grad=True)  # past the eval plan cache
    return counts


def run_hooked(graph: nn.Module, img: torch.Tensor, hooks: list,
               grad: bool = False):
    """One forward of ``graph`` on ``img``; the ``hooks`` are removed after
    it, whatever happens."""
    try:
        with torch.set_grad_enabled(grad):
            graph(img)
    finally:
        for hook in hooks:
            hook.remove()


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, )
