"""Int8 inference (mmmpvg.deploy.quantization): the int8 path stays close to
fp32 for every backbone family and PE method, onnxruntime's int8 model
equals the PyTorch int8 graph, and ``--int8`` refuses what it cannot serve
in one line. Nothing here asserts a time.

Tolerances, stated once (logits of randomised tiny models; largest
difference relative to the largest fp32 logit): int8 vs fp32 <= INT8_TOL
(measured 0.4-1.3 %); two int8 runtimes on the same int8 weights and
activation scales (onnxruntime vs PyTorch, inductor kernels vs reference
ops) <= PARITY_TOL. Those mostly agree to 1e-6, but their fp32 ops round
differently, which now and then moves one activation across a step of its
int8 grid (measured up to 4e-4).
"""
import os.path as osp
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import save_checkpoint
from pe_families import IMG_SIZES
from test_deploy_onnx import (DET, METHODS, SEG, SHIPPED, digits_images,
                              digits_model, shipped_tiny_model)

from mmmpvg.deploy.quantization import (HEAD_MODULE, Int8Classifier,
                                        check_int8, export_int8_onnx,
                                        int8_graph, pt2e_reference)
from mmmpvg.utils import benchmarking

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DIGITS_CONFIG = osp.join(REPO, 'configs/demo/mpvg_vit-micro_digits.py')
FAMILIES = ('vit', *sorted(SHIPPED))
INT8_TOL = 0.03
PARITY_TOL = 2e-3


def tiny_classifier(family, method):
    """(randomised tiny classifier, input side)."""
    if family == 'vit':
        return digits_model(method), 32
    return shipped_tiny_model(family, method), IMG_SIZES[family][0]


def pt2e_or_skip(model, img, **kwargs):
    """The PT2E reference graph, or a skip where this torch/torchao pair
    quantizes nothing (the scheme then refuses in one line)."""
    try:
        return pt2e_reference(model, img, **kwargs)
    except ImportError as error:  # no torchao for this torch
        pytest.skip(str(error))
    except RuntimeError as error:
        if 'quantized no linear layer' not in str(error):
            raise
        pytest.skip(str(error))


def relative_error(out, ref):
    return float((out - ref).abs().max() / ref.abs().max())


def linear_nodes(graph_module):
    """(module path, weight is int8) of every ``nn.Linear`` call of a PT2E
    graph. (CeiT's class attention also calls ``F.linear`` on slices of
    its qkv weight, which stay fp32.)"""
    out = []
    for node in graph_module.graph.nodes:
        if node.target is not torch.ops.aten.linear.default:
            continue
        path, kind = list(node.meta['nn_module_stack'].values())[-1]
        if kind.rsplit('.', 1)[-1] == 'Linear':  # torch's or mmcv's
            weight = node.args[1]
            out.append((path, weight.target is torch.ops.quantized_decomposed
                        .dequantize_per_channel.default))
    return out


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('family', FAMILIES)
def test_int8_stays_close_to_fp32(family, method, one_thread):
    """PT2E's int8 numerics (the graph the 'pt2e' scheme compiles) for
    every family and method: every linear layer but the head's is int8, and
    the logits stay within INT8_TOL of fp32."""
    model, size = tiny_classifier(family, method)
    torch.manual_seed(1)
    img = torch.randn(4, 3, size, size)
    with torch.no_grad():
        ref = model(img, mode='tensor')
        graph = pt2e_or_skip(model, img)
        out = graph(img)

    linears = linear_nodes(graph)
    assert linears and all(int8 != path.startswith(HEAD_MODULE)
                           for path, int8 in linears)
    assert 0 < relative_error(out, ref) <= INT8_TOL


@pytest.mark.slow
def test_inductor_int8_kernels_compute_the_reference(one_thread):
    """The compiled graph (oneDNN int8 kernels) computes what the reference
    graph computes, at batch sizes it was not built with."""
    model, _ = tiny_classifier('vit', 'mpvg')
    img = torch.randn(4, 3, 32, 32)
    compiled = int8_graph(model, img, 'pt2e')
    reference = pt2e_or_skip(model, img)
    for batch in (torch.randn(5, 3, 32, 32), torch.randn(1, 3, 32, 32)):
        with torch.no_grad():
            assert relative_error(compiled(batch),
                                  reference(batch)) <= PARITY_TOL


@pytest.mark.parametrize('scheme', ['dynamic', 'onnxruntime'])
@pytest.mark.parametrize('method', METHODS)
def test_other_schemes_stay_close_to_fp32(scheme, method, one_thread):
    model, _ = tiny_classifier('vit', method)
    img = digits_images(model, 8)
    with torch.no_grad():
        ref = model(img, mode='tensor')
        out = int8_graph(model, img, scheme)(img)
    assert 0 < relative_error(out, ref) <= INT8_TOL


@pytest.mark.parametrize('method', METHODS)
def test_int8_onnx_equals_the_pytorch_int8_graph(method, tmp_path,
                                                 one_thread):
    model, _ = tiny_classifier('vit', method)
    img = digits_images(model, 6)
    path = str(tmp_path / 'int8.onnx')
    export_int8_onnx(model, path, (32, 32))
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    onnx_out, = session.run(None, {'input': img.numpy()})
    with torch.no_grad():
        torch_out = pt2e_or_skip(model, img)(img)
    assert relative_error(torch.from_numpy(onnx_out), torch_out) <= \
        PARITY_TOL
    # int8 matmuls for the 4 layers' qkv, proj, fc1, fc2; the head's fp32.
    nodes = onnx.load(path).graph.node
    assert sum(n.op_type == 'MatMulInteger' for n in nodes) == 16
    assert [n.op_type for n in nodes if n.name.startswith('/model/head/')
            and 'MatMul' in n.op_type] == ['MatMul']


def test_int8_head_is_quantized_on_request(one_thread):
    model, _ = tiny_classifier('vit', 'mpvg')
    img = torch.randn(2, 3, 32, 32)
    linears = linear_nodes(pt2e_or_skip(model, img, fp32_head=False))
    assert all(int8 for _, int8 in linears)


def test_int8_classifier_predicts_like_the_model(one_thread):
    model, _ = tiny_classifier('vit', 'mpvg')
    data = dict(inputs=[torch.from_numpy(np.uint8(np.random.RandomState(0)
                                                  .randint(0, 255, (3, 32,
                                                                    32))))])
    int8 = Int8Classifier(model, 'dynamic')
    predictions = int8.test_step(data)
    inputs = model.data_preprocessor(data, False)['inputs']
    with torch.no_grad():
        scores = model(inputs, mode='tensor').softmax(-1)[0]
    assert predictions[0].pred_score.shape == scores.shape
    assert (predictions[0].pred_score - scores).abs().max() < INT8_TOL
    with pytest.raises(ValueError, match='folded for a'):
        int8(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="only infers"):
        int8(inputs, mode='loss')


# ------------------------------------------------------------ the tools
def test_test_tool_runs_the_int8_model(make_runner, test_tool, one_thread,
                                       tmp_path):
    """``tools/test.py --int8``: the checkpoint loads, then the test loop
    runs the int8 model; its scores are the fp32 run's within INT8_TOL."""
    model, _ = tiny_classifier('vit', 'mpvg')
    ckpt = tmp_path / 'mpvg.pth'
    save_checkpoint(dict(state_dict=model.state_dict()), str(ckpt))
    config = tmp_path / 'mpvg.py'
    cfg = Config.fromfile(DIGITS_CONFIG)
    cfg.model.backbone.pe_cfg = dict(method='mpvg')
    cfg.dump(str(config))
    options = ('test_dataloader.dataset.num_samples=40',
               'test_dataloader.batch_size=16')
    scores = {}
    for name, flags in (('fp32', ()), ('int8', ('--int8', ))):
        out = tmp_path / f'{name}.pkl'
        runner = make_runner(test_tool, config, tmp_path / name, options,
                             ckpt, '--out', out, *flags)
        runner.test()
        with open(out, 'rb') as f:
            scores[name] = torch.stack([p['pred_score']
                                        for p in pickle.load(f)])
    assert type(runner.model) is Int8Classifier
    assert scores['int8'].shape == scores['fp32'].shape == (40, 10)
    assert 0 < (scores['int8'] - scores['fp32']).abs().max() < INT8_TOL


@pytest.mark.parametrize('config,task', [(DET, 'mmdet'), (SEG, 'mmseg')])
def test_int8_refuses_detectors_and_segmentors(config, task, test_tool):
    args = test_tool.parse_args([config, 'ckpt.pth', '--int8'])
    with pytest.raises(ValueError) as error:
        test_tool.merge_args(Config.fromfile(config), args)
    message = str(error.value)
    assert '\n' not in message
    assert f'classifiers (mmpretrain configs) only; this config is {task}' \
        in message


def test_int8_refuses_a_cpu_without_the_int8_engine(monkeypatch, test_tool):
    caps = dict(benchmarking._proc_cpuinfo(), avx2=False, cpu_name='OldCPU')
    # torch >= 2.3 answers through torch.cpu, older torch through cpuinfo.
    monkeypatch.setattr(torch.cpu, 'get_capabilities', lambda: caps,
                        raising=False)
    monkeypatch.setattr(benchmarking, '_proc_cpuinfo', lambda: caps)
    with pytest.raises(RuntimeError) as error:
        check_int8('mmpretrain')
    message = str(error.value)
    assert '\n' not in message
    assert message.startswith('--int8: this CPU (OldCPU') and \
        'no x86 int8 engine' in message and 'without --int8' in message
    args = test_tool.parse_args([DIGITS_CONFIG, 'ckpt.pth', '--int8'])
    with pytest.raises(RuntimeError, match='no x86 int8 engine'):
        test_tool.merge_args(Config.fromfile(DIGITS_CONFIG), args)


def test_int8_and_amp_exclude_each_other(test_tool, capsys):
    with pytest.raises(SystemExit):
        test_tool.parse_args([DIGITS_CONFIG, 'c.pth', '--int8', '--amp'])
    assert 'exclude each other' in capsys.readouterr().err


def test_inferencer_serves_int8(tmp_path, one_thread):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'image_demo', osp.join(REPO, 'tools/image_demo.py'))
    image_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(image_demo)
    model, _ = tiny_classifier('vit', 'mpvg')
    ckpt = str(tmp_path / 'mpvg.pth')
    save_checkpoint(dict(state_dict=model.state_dict(), meta=dict(
        dataset_meta=dict(classes=[str(i) for i in range(10)]))), ckpt)
    config = str(tmp_path / 'mpvg.py')
    cfg = Config.fromfile(DIGITS_CONFIG)
    cfg.model.backbone.pe_cfg = dict(method='mpvg')
    cfg.dump(config)
    image = np.uint8(np.random.RandomState(0).randint(0, 255, (32, 32, 3)))
    results = {}
    for scheme in (None, 'onnxruntime'):
        inferencer = image_demo.build_inferencer(config, ckpt, int8=scheme)
        results[scheme] = inferencer(image)[0]
    assert isinstance(inferencer.model, Int8Classifier)
    fp32, int8 = results[None], results['onnxruntime']
    assert int8['pred_class'] in [str(i) for i in range(10)]
    assert 0 < np.abs(np.array(int8['pred_scores']) -
                      np.array(fp32['pred_scores'])).max() < INT8_TOL
    with pytest.raises(ValueError, match='classifiers'):
        image_demo.build_inferencer(DET, ckpt, int8='pt2e')


@pytest.mark.slow
def test_export_tool_writes_the_int8_model(tmp_path):
    model, _ = tiny_classifier('vit', 'lape')
    ckpt = str(tmp_path / 'lape.pth')
    save_checkpoint(dict(state_dict=model.state_dict()), ckpt)
    config = str(tmp_path / 'lape.py')
    cfg = Config.fromfile(DIGITS_CONFIG)
    cfg.model.backbone.update(pe_cfg=dict(method='lape'), global_pool='avg')
    cfg.dump(config)
    path = str(tmp_path / 'lape_int8.onnx')
    out = subprocess.run(
        [sys.executable, 'tools/deployment/export_onnx.py', config, ckpt,
         path, '--int8'], cwd=REPO, capture_output=True, text=True,
        check=True).stdout
    assert 'PE chain folded, int8 linear layers' in out
    img = digits_images(model, 3)
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    with torch.no_grad():
        torch_out = pt2e_or_skip(model, img)(img)
    onnx_out = session.run(None, {'input': img.numpy()})[0]
    assert relative_error(torch.from_numpy(onnx_out), torch_out) <= \
        PARITY_TOL
    refused = subprocess.run(
        [sys.executable, 'tools/deployment/export_onnx.py', DET, ckpt,
         path, '--int8', '--shape', '64', '64'], cwd=REPO,
        capture_output=True, text=True)
    assert refused.returncode != 0
    assert 'error: --int8 serves classifiers (mmpretrain configs) only' \
        in refused.stderr


def test_pt2e_that_quantizes_nothing_is_refused(monkeypatch):
    """A torchao whose quantizer matches nothing in this torch's graph
    (torchao 0.18 under torch 2.11) would hand back an fp32 model."""
    quantize_pt2e = pytest.importorskip(
        'torchao.quantization.pt2e.quantize_pt2e')
    monkeypatch.setattr(quantize_pt2e, 'convert_pt2e', lambda graph: graph)
    model, size = tiny_classifier('vit', 'mpvg')
    with pytest.raises(RuntimeError, match='quantized no linear layer'):
        pt2e_reference(model, torch.randn(2, 3, size, size))
