"""Int8 inference of mmmpvg classifiers on x86 CPUs.

The PE chain is folded into constants first (:func:`mmmpvg.models.fold_pe`,
as for the ONNX export), so none of its norms runs or is quantized; then
the classifier's linear layers compute in int8: weights quantized once, per
output channel, activations quantized per call (per tensor, from the
call's own range, so no calibration data is needed). Three schemes, all
with that recipe:

* ``'pt2e'``: ``torch.export`` + torchao's PT2E ``X86InductorQuantizer``,
  compiled by inductor with freezing, which lowers each quantized linear to
  a oneDNN int8 kernel (VNNI where the CPU has it);
* ``'dynamic'``: PyTorch's eager dynamic int8 ``nn.Linear``
  (``torch.ao.quantization.quantize_dynamic``, fbgemm/x86 engine);
* ``'onnxruntime'``: the folded ONNX export quantized by onnxruntime's
  ``quantize_dynamic`` (``MatMulInteger``/``DynamicQuantizeLinear``) and
  run by its CPU provider.

The int8 model folds the PE for the patch grid of the first images it
sees; other image sizes are refused. Detectors and segmentors are not
served: their RPN/decode heads and mmcv ops were never checked in int8.
"""
import copy
import dataclasses
import os.path as osp
import tempfile
from contextlib import ExitStack
from typing import Optional

import torch
import torch._inductor.config as inductor_config
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseModel, is_model_wrapper

from ..models import fold_pe
from ..utils.benchmarking import cpu_isa
from .onnx_export import (MIN_OPSET, batch_agnostic_windows, export_module,
                          export_onnx)

SCHEMES = {
    'onnxruntime': "onnxruntime quantize_dynamic of the folded ONNX model",
    'pt2e': 'PT2E X86InductorQuantizer (torchao) + inductor, oneDNN int8',
    'dynamic': 'eager dynamic int8 nn.Linear (torch.ao, fbgemm/x86)',
}
# The default needs no C++ compiler and no torchao and builds in a second;
# 'pt2e' (same numerics) is faster where a compiler is present
# (docs/en/user_guides/int8_inference.md).
DEFAULT_SCHEME = 'onnxruntime'
# Where the classification head's ops live in each representation: the
# module path inside export_module()'s graph, and the ONNX node-name prefix
# torch.onnx gives that module's ops.
HEAD_MODULE = 'model.head'
HEAD_ONNX_PREFIX = '/model/head/'


def int8_unsupported_reason() -> Optional[str]:
    """Why this CPU cannot run the int8 path, or None where it can.

    The x86 int8 kernels (fbgemm, oneDNN, onnxruntime's MLAS) need AVX2 at
    least; VNNI (AVX512 or AVX2 form) and AMX make them faster.
    """
    isa = cpu_isa()
    if 'x86' not in isa['quantized_engines'] or not isa['avx2']:
        return (f"this CPU ({isa['cpu_name']}, torch capability "
                f"{isa['capability']}) has no x86 int8 engine: it needs "
                'AVX2 or AVX512 and a torch with the x86 quantized engine '
                f"(this one has {isa['quantized_engines']})")
    return None


def check_int8_task(task: str) -> None:
    """Refuse, in one line, a detector or segmentor (``task`` is the
    config's default_scope)."""
    if task != 'mmpretrain':
        raise ValueError(
            f'--int8 serves classifiers (mmpretrain configs) only; this '
            f'config is {task}: run detectors and segmentors without --int8.')


def check_int8(task: str) -> None:
    """Refuse, in one line, what ``--int8`` cannot serve: a detector or a
    segmentor, or a CPU without the int8 engine."""
    check_int8_task(task)
    reason = int8_unsupported_reason()
    if reason:
        raise RuntimeError(f'--int8: {reason}. Run without --int8 (fp32).')


def _reduce_range() -> bool:
    """7-bit activations where the CPU lacks VNNI: AVX2's byte multiply
    (vpmaddubsw) sums pairs into saturating 16 bits, which full-range uint8
    times int8 can overflow."""
    isa = cpu_isa()
    return not (isa['avx512_vnni'] or isa['avx_vnni'] or isa['amx_int8'])


def _example_batch(img: torch.Tensor) -> torch.Tensor:
    """Two copies of the first image: ``torch.export`` treats a batch axis
    of size 1 as a constant."""
    return img[:1].expand(2, *img.shape[1:]).contiguous()


def _pt2e_quantize(graph: nn.Module, img: torch.Tensor,
                   fp32_head: bool) -> torch.fx.GraphModule:
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer \
            as x86q
        from torchao.quantization.pt2e.quantize_pt2e import (convert_pt2e,
                                                             prepare_pt2e)
    except ImportError as error:
        raise ImportError(
            "int8 scheme 'pt2e' needs torchao built for this torch "
            f"({torch.__version__}; pip install -r requirements/deploy.txt), "
            f"or choose the 'dynamic' or 'onnxruntime' scheme: {error}"
        ) from error
    example = _example_batch(img)
    with batch_agnostic_windows(), fold_pe(graph, example):
        exported = torch.export.export(
            graph, (example, ),
            dynamic_shapes=({0: torch.export.Dim('batch')}, )).module()
    config = x86q.get_default_x86_inductor_quantization_config(
        is_dynamic=True, reduce_range=_reduce_range())
    # Weights on onnxruntime's symmetric int8 grid, [-127, 127] (scale
    # max|w| / 127; torchao's default [-128, 127] gives max|w| / 127.5), so
    # that both runtimes hold the same int8 weights.
    config = dataclasses.replace(
        config, weight=dataclasses.replace(config.weight, quant_min=-127))
    # Linear layers only, as in the other two schemes (the patch
    # embedding's convolution and attention's matmuls stay fp32).
    quantizer = x86q.X86InductorQuantizer().set_module_type_qconfig(
        nn.Linear, config)
    if fp32_head:
        quantizer.set_module_name_qconfig(HEAD_MODULE, None)
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        # Activations need no calibration (quantized per call), but the
        # weight observers record their ranges in a forward pass.
        prepared(example)
    converted = convert_pt2e(prepared)
    weight_dequant = torch.ops.quantized_decomposed.dequantize_per_channel
    if not any(node.target is weight_dequant.default
               for node in converted.graph.nodes):
        import torchao
        raise RuntimeError(
            f"int8 scheme 'pt2e': torchao {torchao.__version__} quantized "
            f'no linear layer of the graph torch {torch.__version__} '
            "exported; choose the 'onnxruntime' or 'dynamic' scheme, or "
            'the torch this project pins.')
    return converted


def _pt2e_graph(graph: nn.Module, img: torch.Tensor,
                fp32_head: bool) -> nn.Module:
    return _FrozenCompiled(_pt2e_quantize(graph, img, fp32_head))


class _FrozenCompiled(nn.Module):
    """``torch.compile(module)`` run with inductor's freezing on.

    Freezing makes the weights constants, which is what lets inductor pack
    them for the oneDNN int8 kernels (unfrozen the int8 graph ran slower
    than fp32). It is set around every call, as a recompile (another batch
    size) compiles inside the call; passed as ``torch.compile(options=)``
    instead, the x86 int8 lowering failed ("onednn.qlinear_prepack is not
    an OpOverload").
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.compiled = torch.compile(module)

    def forward(self, img):
        with inductor_config.patch(freezing=True):
            return self.compiled(img)


class _FoldedGraph(nn.Module):
    """``graph`` kept folded for as long as this module lives (it owns a
    private copy, so nothing else sees the fold)."""

    def __init__(self, graph: nn.Module, img: torch.Tensor):
        super().__init__()
        self.graph = graph
        self._fold = ExitStack()
        self._fold.enter_context(fold_pe(graph, img))

    def forward(self, img):
        return self.graph(img)


def _dynamic_graph(graph: nn.Module, img: torch.Tensor,
                   fp32_head: bool) -> nn.Module:
    from torch.ao.quantization import (per_channel_dynamic_qconfig,
                                       quantize_dynamic)
    torch.backends.quantized.engine = 'x86'
    folded = _FoldedGraph(graph, img)
    quantized = [name for name, _ in graph.model.named_children()
                 if not (fp32_head and f'model.{name}' == HEAD_MODULE)]
    quantize_dynamic(
        folded, {f'graph.model.{name}': per_channel_dynamic_qconfig
                 for name in quantized}, dtype=torch.qint8, inplace=True)
    return folded


def quantize_onnx(fp32_path: str, int8_path: str,
                  fp32_head: bool = True) -> None:
    """Quantize a folded classifier export (:func:`export_onnx`) with
    onnxruntime: int8 weights per output channel, activations per call."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    head = [n for n in onnx.load(fp32_path).graph.node
            if n.name.startswith(HEAD_ONNX_PREFIX)] if fp32_head else []
    # The quantizer turns each Gemm into a MatMul named '<Gemm>_MatMul'
    # before it picks nodes. MatMuls only (what the PyTorch schemes
    # quantize): the patch embedding's convolution stays fp32.
    quantize_dynamic(
        fp32_path, int8_path, per_channel=True, weight_type=QuantType.QInt8,
        reduce_range=_reduce_range(), op_types_to_quantize=['MatMul'],
        nodes_to_exclude=[name for n in head
                          for name in (n.name, f'{n.name}_MatMul')])


class OnnxRuntimeGraph(nn.Module):
    """An ONNX classifier run by onnxruntime's CPU provider, called like
    the PyTorch graph (NCHW float tensor in, class scores out)."""

    def __init__(self, path: str, threads: Optional[int] = None):
        super().__init__()
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            path, options, providers=['CPUExecutionProvider'])

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        scores, = self.session.run(
            None, {'input': img.detach().float().cpu().numpy()})
        return torch.from_numpy(scores)


def export_int8_onnx(classifier: nn.Module, out_file: str, shape,
                     opset: int = MIN_OPSET, fp32_head: bool = True) -> None:
    """The folded ONNX export of ``classifier`` at ``shape`` (H, W),
    quantized by :func:`quantize_onnx`, written to ``out_file``."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = osp.join(tmp, 'fp32.onnx')
        export_onnx(classifier, 'mmpretrain', fp32_path, shape, opset=opset)
        quantize_onnx(fp32_path, out_file, fp32_head)


def _onnxruntime_graph(graph: nn.Module, img: torch.Tensor,
                       fp32_head: bool) -> nn.Module:
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'int8.onnx')
        export_int8_onnx(graph.model, path, img.shape[-2:],
                         fp32_head=fp32_head)
        return OnnxRuntimeGraph(path)


_BUILDERS = dict(pt2e=_pt2e_graph, dynamic=_dynamic_graph,
                 onnxruntime=_onnxruntime_graph)


def _plain_linears(module: nn.Module) -> nn.Module:
    """mmcv's ``Linear`` (the FFNs' layers) made plain ``nn.Linear``s.

    mmcv's class only adds an empty-input path for torch < 1.6; PT2E's
    quantizer and ``quantize_dynamic`` find linear layers by their exact
    class and left every FFN, two thirds of a ViT's matmul work, in fp32.
    """
    from mmcv.cnn import Linear
    for m in module.modules():
        if type(m) is Linear:
            m.__class__ = nn.Linear
    return module


def _graph_copy(classifier: nn.Module) -> nn.Module:
    """:func:`export_module` of a CPU copy of ``classifier``."""
    return export_module(
        _plain_linears(copy.deepcopy(classifier).cpu().eval()), 'mmpretrain')


def pt2e_reference(classifier: nn.Module, img: torch.Tensor,
                   fp32_head: bool = True) -> torch.fx.GraphModule:
    """Scheme ``'pt2e'`` before inductor: the exported graph with
    quantize/dequantize ops around fp32 linear layers, i.e. the int8
    numerics computed by reference ops (slow; for checks)."""
    return _pt2e_quantize(_graph_copy(classifier), img.detach().cpu(),
                          fp32_head)


def int8_graph(classifier: nn.Module, img: torch.Tensor,
               scheme: str = DEFAULT_SCHEME,
               fp32_head: bool = True) -> nn.Module:
    """An int8 module mapping a normalised image batch of ``img``'s size to
    ``classifier``'s class scores; ``classifier`` itself is unchanged.

    ``fp32_head`` keeps the classification head's linear layer in fp32.
    """
    if scheme not in SCHEMES:
        raise ValueError(f'Unknown int8 scheme {scheme!r}; choose one of '
                         f'{sorted(SCHEMES)}.')
    reason = int8_unsupported_reason()
    if reason:
        raise RuntimeError(f'int8: {reason}.')
    return _BUILDERS[scheme](_graph_copy(classifier), img.detach().cpu(),
                             fp32_head)


class Int8Classifier(BaseModel):
    """An mmpretrain classifier whose class scores come from an int8 graph
    (:func:`int8_graph`): ``test_step``, ``forward(mode='tensor' or
    'predict')`` and the inferencers work as with the fp32 model.

    The graph is built from the first batch it sees (the PE chain folds
    for that image size) and serves that size only.
    """

    def __init__(self, classifier: nn.Module, scheme: str = DEFAULT_SCHEME,
                 fp32_head: bool = True):
        super().__init__(data_preprocessor=classifier.data_preprocessor)
        if scheme not in SCHEMES:
            raise ValueError(f'Unknown int8 scheme {scheme!r}; choose one '
                             f'of {sorted(SCHEMES)}.')
        self.classifier = classifier.eval()
        self.scheme = scheme
        self.fp32_head = fp32_head
        self.graph = None
        if hasattr(classifier, 'dataset_meta'):
            self.dataset_meta = classifier.dataset_meta

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor, data_samples=None,
                mode: str = 'tensor'):
        if mode not in ('tensor', 'predict'):
            raise ValueError(f"The int8 model only infers (mode 'tensor' or "
                             f"'predict'), got mode={mode!r}.")
        if self.graph is None:
            print_log(f'Quantizing to int8 ({SCHEMES[self.scheme]}) for '
                      f'{inputs.shape[-2]}x{inputs.shape[-1]} images',
                      logger='current')
            self.graph = int8_graph(self.classifier, inputs, self.scheme,
                                    self.fp32_head)
        scores = self.graph(inputs.cpu()).to(inputs.device)
        if mode == 'tensor':
            return scores
        return self.classifier.head._get_predictions(scores, data_samples)


def add_int8_argument(parser) -> None:
    """``--int8 [SCHEME]`` of the tools (argparse)."""
    parser.add_argument(
        '--int8', nargs='?', const=DEFAULT_SCHEME, choices=list(SCHEMES),
        metavar='SCHEME',
        help='classifiers on x86 CPUs: infer with int8 linear layers, the PE '
        f'chain folded; SCHEME {"/".join(SCHEMES)} (default {DEFAULT_SCHEME})'
        ', see mmmpvg.deploy.quantization')


class Int8TestHook(Hook):
    """``tools/test.py --int8``: the test loop runs the checkpoint's
    classifier as an :class:`Int8Classifier` (it swaps the model after the
    checkpoint has loaded)."""

    def __init__(self, scheme: str = DEFAULT_SCHEME):
        if scheme not in SCHEMES:
            raise ValueError(f'Unknown int8 scheme {scheme!r}; choose one '
                             f'of {sorted(SCHEMES)}.')
        self.scheme = scheme

    def before_test(self, runner):
        model = runner.model
        if is_model_wrapper(model):
            model.module = Int8Classifier(model.module, self.scheme)
        else:
            runner.model = Int8Classifier(model, self.scheme)
