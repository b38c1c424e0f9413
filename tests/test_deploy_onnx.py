"""ONNX export (tools/deployment/export_onnx.py): onnxruntime reproduces our
eval-mode outputs to 1e-4 on random and real images, for every PE method,
with the PE chain folded out of the graph."""
import collections
import os.path as osp
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import save_checkpoint

from mmmpvg.datasets.shapes import make_ade20k_shapes, make_coco_shapes
from mmmpvg.datasets.sklearn_digits import SklearnDigits
from mmmpvg.deploy import (export_module, export_onnx, layernorm_calls,
                           load_model)
from mmmpvg.models import fold_pe
from pe_families import IMG_SIZES, METHODS, TINY_BACKBONES, build

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DIGITS = osp.join(REPO, 'configs/demo/_base_/vit-micro_digits.py')
SHAPES = osp.join(REPO, 'configs/vit_adapter/shapes')
SEG = osp.join(SHAPES, 'upernet_vit-adapter-ti-mpvg_shapes-64x64.py')
DET = osp.join(SHAPES, 'mask-rcnn_vit-adapter-ti-mpvg_fpn_shapes.py')
TOL = 1e-4


def randomised(model, only=''):
    """Non-trivial weights (those whose name contains ``only``): a
    zero-initialised PE or unit norms would fold to constants that hide a
    wrong fold."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if only not in name:
                continue
            if p.dim() == 1 and name.endswith('weight'):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.1 if p.dim() == 1 else 0.05)
    return model


def digits_model(method, pool='avg'):
    cfg = Config.fromfile(DIGITS)
    cfg.model.backbone.pe_cfg = dict(method=method)
    cfg.model.backbone.global_pool = pool
    return randomised(load_model(cfg)[0])


def digits_images(model, count=3):
    data = SklearnDigits(split='test', num_samples=count)
    imgs = [torch.from_numpy(data.get_data_info(i)['img']).permute(2, 0, 1)
            for i in range(count)]
    return model.data_preprocessor(dict(inputs=imgs), False)['inputs']


def run_onnx(path, img):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(None, {'input': img.numpy()})


def assert_parity(graph, path, img):
    with torch.no_grad():
        ours = graph(img)
    ours = ours if isinstance(ours, (tuple, list)) else (ours, )
    theirs = run_onnx(path, img)
    assert len(theirs) == len(ours)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a.numpy(), rtol=0, atol=TOL)


def pe_norm_count(model):
    """LN'_l and LN'' of the model's PE."""
    pe = model.backbone.pe
    return len(pe.layer_norms) + (pe.last_pos_norm is not None)


def layernorm_nodes(path):
    ops = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    return ops['LayerNormalization'], ops


@pytest.mark.parametrize('method', METHODS)
def test_vit_classifier_parity_and_no_pe_layernorm(method, tmp_path):
    model = digits_model(method)
    path = str(tmp_path / 'vit.onnx')
    graph = export_onnx(model, 'mmpretrain', path, (32, 32))
    # Dynamic batch: 2 random and 3 real digits through a batch-1 export.
    assert_parity(graph, path, torch.randn(2, 3, 32, 32))
    real = digits_images(model)
    assert_parity(graph, path, real)
    # The eval forward outside the block still gives the same scores.
    with torch.no_grad():
        assert torch.equal(graph(real), graph(real))

    calls = layernorm_calls(graph, real)
    pe_norms = pe_norm_count(model)
    assert calls['pe'] == pe_norms
    assert calls['token'] == 2 * 4 + 1  # ln1, ln2 per layer, the Last LN
    assert layernorm_nodes(path)[0] == calls['token']
    # The check can fail: without folding the PE norms are in the graph.
    unfolded = str(tmp_path / 'unfolded.onnx')
    export_onnx(model, 'mmpretrain', unfolded, (32, 32), fold=False)
    assert layernorm_nodes(unfolded)[0] == calls['token'] + pe_norms
    assert_parity(graph, unfolded, real)


def test_class_token_classifier_parity(tmp_path):
    model = digits_model('pvg', pool='cls')
    path = str(tmp_path / 'vit_cls.onnx')
    graph = export_onnx(model, 'mmpretrain', path, (32, 32), batch_size=2)
    assert_parity(graph, path, digits_images(model, 4))


# The Table 1/2 families beyond DeiT: their shipped configs with the tiny
# backbones of pe_families.
SHIPPED = {
    'swin': 'configs/swin/swin-tiny_{}_4xb256_in1k.py',
    't2t': 'configs/t2t_vit/t2t-vit-7_{}_4xb128_in1k.py',
    'ceit': 'configs/ceit/ceit-tiny_{}_4xb256_in1k.py',
    'vit_lite': 'configs/vit_lite/vit-lite-7-4_{}_1xb128_cifar100-32px.py',
}


def shipped_tiny_model(family, method):
    cfg = Config.fromfile(osp.join(REPO, SHIPPED[family].format(method)))
    cfg.model.backbone = dict(cfg.model.backbone, **TINY_BACKBONES[family])
    cfg.model.backbone.drop_path_rate = 0.
    cfg.model.head.update(num_classes=5, in_channels=build(
        cfg.model.backbone).pe.stage_dims[-1])
    return randomised(load_model(cfg)[0])


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('family', sorted(SHIPPED))
def test_other_families_export_with_parity_and_no_pe_layernorm(
        family, method, tmp_path):
    model = shipped_tiny_model(family, method)
    size = IMG_SIZES[family][0]
    path = str(tmp_path / f'{family}.onnx')
    graph = export_onnx(model, 'mmpretrain', path, (size, size))
    assert_parity(graph, path, torch.randn(3, 3, size, size))
    calls = layernorm_calls(graph, torch.randn(1, 3, size, size))
    # The PE's norms, and on Swin the PatchMerging norms the PE takes.
    merging = calls['pe'] - pe_norm_count(model)
    assert merging >= 0 and (merging == 0 or family == 'swin')
    assert (calls['pe'] == 0) == (method == 'default')
    assert layernorm_nodes(path)[0] == calls['token']


def test_fold_pe_rejects_another_grid_and_restores_the_model():
    model = digits_model('mpvg')
    x = torch.randn(1, 3, 32, 32)
    with fold_pe(model.backbone, x):
        with pytest.raises(ValueError, match='folded for a'):
            model.backbone(torch.randn(1, 3, 48, 48))
        assert any(n.startswith('folded_')
                   for n, _ in model.backbone.pe.named_buffers())
    assert not list(model.backbone.pe.named_buffers())
    with pytest.raises(ValueError, match='no LayerwisePositionEmbedding'):
        with fold_pe(torch.nn.Linear(2, 2), torch.randn(1, 2)):
            pass


def shapes_image(root, task, shape):
    if task == 'mmseg':
        make_ade20k_shapes(str(root), splits=(('validation', 1), ))
        img = mmcv.imread(
            str(next((root / 'images' / 'validation').iterdir())))
    else:
        make_coco_shapes(str(root), splits=(('val', 1), ))
        img = mmcv.imread(str(next((root / 'val').iterdir())))
    img = mmcv.imresize(img, shape[::-1])
    return torch.from_numpy(img).permute(2, 0, 1)


@pytest.mark.slow
@pytest.mark.parametrize('config,task,shape', [
    (SEG, 'mmseg', (192, 192)), (DET, 'mmdet', (128, 160))],
    ids=['upernet', 'mask-rcnn'])
def test_vit_adapter_parity(config, task, shape, tmp_path):
    model, found = load_model(config)
    assert found == task
    # The deep adapter keeps its own init (fully random weights blow the
    # activations up to where float32 rounding alone exceeds 1e-4).
    model.init_weights()
    randomised(model, only='.pe.')
    path = str(tmp_path / f'{task}.onnx')
    graph = export_onnx(model, task, path, shape)
    ops = layernorm_nodes(path)[1]
    # Deformable attention through its PyTorch path: one GridSample per
    # level of each injector and extractor.
    assert ops['GridSample'] > 0
    real = model.data_preprocessor(
        dict(inputs=[shapes_image(tmp_path, task, shape)]), False)['inputs']
    assert_parity(graph, path, real)
    assert_parity(graph, path, torch.randn(2, 3, *shape))
    calls = layernorm_calls(graph, real)
    assert calls['pe'] == pe_norm_count(model) > 0
    assert ops['LayerNormalization'] == calls['token']


def test_upernet_pool_sizes_that_do_not_divide_are_refused(tmp_path):
    model, task = load_model(SEG)
    with pytest.raises(ValueError, match='multiples of 192'):
        export_onnx(model, task, str(tmp_path / 'x.onnx'), (64, 64))


def test_bad_export_arguments_are_refused(tmp_path):
    model = digits_model('mpvg')
    path = str(tmp_path / 'x.onnx')
    with pytest.raises(ValueError, match='GridSample'):
        export_onnx(model, 'mmpretrain', path, (32, 32), opset=16)
    with pytest.raises(ValueError, match=r'\(H, W\)'):
        export_onnx(model, 'mmpretrain', path, (32, ))


@pytest.mark.slow
def test_export_tool_from_a_training_checkpoint(tmp_path):
    model = digits_model('lape')
    ckpt = str(tmp_path / 'lape.pth')
    save_checkpoint(dict(state_dict=model.state_dict()), ckpt)
    path = str(tmp_path / 'lape.onnx')
    config = str(tmp_path / 'lape.py')
    cfg = Config.fromfile(DIGITS)
    cfg.model.backbone.pe_cfg = dict(method='lape')
    cfg.dump(config)
    out = subprocess.run(
        [sys.executable, 'tools/deployment/export_onnx.py', config, ckpt,
         path], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert 'at 32x32 (dynamic batch, opset 17, PE chain folded)' in out
    assert_parity(export_module(model, 'mmpretrain'), path,
                  digits_images(model))
