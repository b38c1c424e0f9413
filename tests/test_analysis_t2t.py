"""The analysis tools (Fig. 2, 4, 6, 7) on T2T-ViT (Fig. 4 lists T2T-ViT-7
with its 7 layers): a tiny PET2TViT."""
import importlib.util
import json
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401  (registers PET2TViT)
from mmmpvg.analysis import PECapture, find_pe_backbone, summarize

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# 7 layers as T2T-ViT-7, narrow; 64 px -> a 4 x 4 token grid.
ARCH = dict(embed_dims=32, num_layers=7, num_heads=2, feedforward_channels=64)
LAYERS_WITH_PE = dict(default=[], lape=list(range(7)), pvg=list(range(1, 7)),
                      mpvg=list(range(1, 7)))
GAP = dict(pvg=True, mpvg=True)

TINY_CONFIG = """
custom_imports = dict(imports=['mmmpvg.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='PET2TViT',
        arch=dict(embed_dims=32, num_layers=7, num_heads=2,
                  feedforward_channels=64),
        img_size=64, t2t_cfg=dict(token_dims=16),
        pe_cfg=dict(method={method!r}),
        with_cls_token={cls!r},
        out_type={out_type!r}),
    head=dict(type='VisionTransformerClsHead', num_classes=10,
              in_channels=32),
    data_preprocessor=dict(mean=[127.5] * 3, std=[64.0] * 3, to_rgb=True))
"""


def write_config(tmp_path, method):
    gap = GAP.get(method, False)
    path = tmp_path / f'tiny_t2t_{method}.py'
    path.write_text(TINY_CONFIG.format(
        method=method, cls=not gap,
        out_type='avg_featmap' if gap else 'cls_token'))
    return path


def load_tool(name):
    path = osp.join(REPO, 'tools', 'analysis', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f't2t_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_backbone(method, seed=0):
    """A tiny T2T-ViT whose LayerNorms are not the identity."""
    torch.manual_seed(seed)
    gap = GAP.get(method, False)
    backbone = MODELS.build(dict(
        type='PET2TViT', arch=ARCH, img_size=64, t2t_cfg=dict(token_dims=16),
        pe_cfg=dict(method=method), with_cls_token=not gap,
        out_type='avg_featmap' if gap else 'cls_token'))
    backbone.init_weights()
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
    return backbone.eval()


def layer_norm(x, norm):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias,
                        norm.eps)


@pytest.mark.parametrize('method', list(LAYERS_WITH_PE))
def test_capture_records_the_seven_blocks(method):
    backbone = build_backbone(method)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), PECapture(backbone) as hooks:
        (pooled, ) = backbone(images)
        record = hooks.pop()
    tokens = 16 + (0 if GAP.get(method) else 1)
    assert record.grid_size == (4, 4)
    assert len(record.layer_inputs) == 7
    assert [i for i, pe in enumerate(record.layer_pe) if pe is not None] \
        == LAYERS_WITH_PE[method]
    for layer, block in enumerate(backbone.encoder):
        x = record.layer_inputs[layer]
        assert x.shape == (2, tokens, 32)
        torch.testing.assert_close(record.layer_ln1[layer],
                                   layer_norm(x, block.ln1))
    torch.testing.assert_close(
        record.last_norm_output,
        layer_norm(record.last_norm_input, backbone.norm))
    assert (record.plan.to_last_norm is not None) == (method == 'mpvg')
    # What the record pools is what the backbone outputs.
    torch.testing.assert_close(record.pool(record.output_tokens), pooled)
    assert record.patch_grid(record.output_tokens).shape == (2, 4, 4, 32)


def test_summary_and_finding_the_backbone(tmp_path):
    backbone = build_backbone('mpvg')
    records = []
    with torch.no_grad(), PECapture(backbone) as hooks:
        for seed in range(2):
            torch.manual_seed(seed)
            backbone(torch.randn(2, 3, 64, 64))
            records.append(hooks.pop())
    summary = summarize(backbone, records)
    assert summary.num_images == 4
    assert summary.layers_with_pe == list(range(1, 7))
    assert len(summary.layer_pearson()) == 7
    assert summary.last_norm.pe.shape == (16, 32)
    model = MODELS.build(Config.fromfile(
        str(write_config(tmp_path, 'pvg'))).model)
    assert find_pe_backbone(model) is model.backbone


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for index, (h, w) in enumerate([(80, 64), (64, 64), (64, 96)]):
        mmcv.imwrite(rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                     str(folder / f'img_{index}.png'))
    return str(folder)


@pytest.mark.slow
@pytest.mark.parametrize('method', ['lape', 'mpvg'])
def test_tools_write_figures_and_numbers_for_t2t(method, image_dir,
                                                 tmp_path):
    config = write_config(tmp_path, method)
    common = [str(config), 'none', '--images', image_dir, '--batch-size',
              '2']

    heat = load_tool('pe_heatmaps').main(
        common + ['--out-dir', str(tmp_path / 'heat')])
    assert osp.getsize(tmp_path / 'heat' / 'pe_heatmaps.png') > 1000
    assert heat['layers_with_pe'] == LAYERS_WITH_PE[method]

    corr = load_tool('pe_correlation').main(
        ['--model', str(config), 'none', '--images', image_dir,
         '--out-dir', str(tmp_path / 'corr')])
    with open(tmp_path / 'corr' / 'pe_correlation.json') as f:
        saved = json.load(f)['models'][0]
    assert saved['pearson'] == corr[0]['pearson']
    assert len(saved['pearson']) == 7
    assert [i for i, r in enumerate(saved['pearson']) if r is not None] \
        == LAYERS_WITH_PE[method]

    stats = load_tool('last_ln_stats').main(
        common + ['--out-dir', str(tmp_path / 'last')])
    assert stats['pooled'] == ('class token' if method == 'lape'
                               else 'mean over tokens')
    assert ('cosine_of_batch_means_ln_only' in stats) == (method == 'mpvg')

    norms = load_tool('token_norm_map').main(
        common + ['--num-images', '2', '--out-dir', str(tmp_path / 'norm')])
    grids = norms['images'][0]['grids']
    assert np.asarray(grids['before_last_norm']).shape == (4, 4)
