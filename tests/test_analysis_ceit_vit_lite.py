"""The analysis tools (Fig. 2, 4, 6, 7) on tiny CeiT and ViT-Lite models."""
import importlib.util
import json
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401  (registers the backbones)
from mmmpvg.analysis import PECapture, summarize

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ARCH = dict(embed_dims=16, num_layers=3, num_heads=2,
            feedforward_channels=32)
TINY = dict(
    ceit=dict(type='PECeiT', arch=ARCH, img_size=64, stem_channels=8),
    vit_lite=dict(type='PEViTLite', arch=ARCH, img_size=16))
IMG = dict(ceit=64, vit_lite=16)
# PE-receiving layers (CeiT PVG/MPVG include layer 0, ViT-Lite's do not).
LAYERS_WITH_PE = dict(
    ceit=dict(default=[], lape=[0, 1, 2], pvg=[0, 1, 2], mpvg=[0, 1, 2]),
    vit_lite=dict(default=[], lape=[0, 1, 2], pvg=[1, 2], mpvg=[1, 2]))

TINY_CONFIG = """
custom_imports = dict(imports=['mmmpvg.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict({backbone}, global_pool={pool!r},
                  pe_cfg=dict(method={method!r})),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=16),
    data_preprocessor=dict(mean=[127.5] * 3, std=[64.0] * 3, to_rgb=True))
"""


def pool_of(method):
    return 'cls' if method in ('default', 'lape') else 'avg'


def load_tool(name):
    path = osp.join(REPO, 'tools', 'analysis', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'cv_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_backbone(kind, method):
    """A tiny backbone whose LayerNorms are not the identity."""
    torch.manual_seed(0)
    backbone = MODELS.build(dict(TINY[kind], global_pool=pool_of(method),
                                 pe_cfg=dict(method=method)))
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


@pytest.mark.parametrize('kind', sorted(TINY))
@pytest.mark.parametrize('method', ['default', 'lape', 'pvg', 'mpvg'])
def test_capture_records_every_layer(kind, method):
    backbone = build_backbone(kind, method)
    size = IMG[kind]
    with torch.no_grad(), PECapture(backbone) as hooks:
        (pooled, ) = backbone(torch.randn(2, 3, size, size))
        record = hooks.pop()
    assert record.grid_size == (4, 4)
    tokens = 16 + (1 if pool_of(method) == 'cls' else 0)
    assert [i for i, pe in enumerate(record.layer_pe) if pe is not None] \
        == LAYERS_WITH_PE[kind][method]
    for layer, block in enumerate(backbone.layers):
        x = record.layer_inputs[layer]
        assert x.shape == (2, tokens, 16)
        torch.testing.assert_close(record.layer_ln1[layer],
                                   layer_norm(x, block.ln1))
        if record.layer_pe[layer] is not None:
            assert record.layer_pe[layer].shape == (1, tokens, 16)
    assert record.patch_grid(record.layer_ln1[0]).shape == (2, 4, 4, 16)
    if kind == 'ceit':  # its Last LN sees the LCA token only
        assert record.last_norm_input is None
    else:  # pooling reads the Last LN output (+ LN''(pos_0) for MPVG)
        torch.testing.assert_close(record.pool(record.output_tokens), pooled)


@pytest.mark.parametrize('kind', sorted(TINY))
def test_summary_has_one_correlation_per_layer(kind):
    backbone = build_backbone(kind, 'mpvg')
    records = []
    with torch.no_grad(), PECapture(backbone) as hooks:
        for seed in range(2):
            torch.manual_seed(seed)
            backbone(torch.randn(2, 3, IMG[kind], IMG[kind]))
            records.append(hooks.pop())
    summary = summarize(backbone, records)
    assert summary.num_images == 4
    pearson = summary.layer_pearson()
    assert len(pearson) == 3
    assert [i for i, r in enumerate(pearson) if r is not None] == \
        LAYERS_WITH_PE[kind]['mpvg']
    assert all(-1 <= r <= 1 for r in pearson if r is not None)
    assert (summary.last_norm is None) == (kind == 'ceit')


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for index, (h, w) in enumerate([(80, 64), (64, 64)]):
        mmcv.imwrite(rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                     str(folder / f'img_{index}.png'))
    return str(folder)


def write_config(tmp_path, kind, method):
    backbone = ', '.join(f'{k}={v!r}' for k, v in TINY[kind].items())
    path = tmp_path / f'tiny_{kind}_{method}.py'
    path.write_text(TINY_CONFIG.format(backbone=backbone,
                                       pool=pool_of(method), method=method))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize('kind', sorted(TINY))
def test_tools_write_figures_and_numbers(kind, image_dir, tmp_path):
    """Fig. 4 (pe_correlation) with two methods side by side, Fig. 2
    heatmaps; the Last-LN tools on ViT-Lite, a clear refusal on CeiT."""
    lape, mpvg = (write_config(tmp_path, kind, m) for m in ('lape', 'mpvg'))
    corr = load_tool('pe_correlation').main(
        ['--model', lape, 'none', '--model', mpvg, 'none', '--images',
         image_dir, '--out-dir', str(tmp_path / 'corr')])
    with open(tmp_path / 'corr' / 'pe_correlation.json') as f:
        saved = json.load(f)['models']
    assert [m['pearson'] for m in saved] == [c['pearson'] for c in corr]
    assert [i for i, r in enumerate(saved[1]['pearson']) if r is not None] \
        == LAYERS_WITH_PE[kind]['mpvg']
    assert osp.getsize(tmp_path / 'corr' / 'pe_correlation.png') > 1000

    common = [mpvg, 'none', '--images', image_dir, '--batch-size', '2']
    heat = load_tool('pe_heatmaps').main(
        common + ['--out-dir', str(tmp_path / 'heat')])
    assert heat['layers_with_pe'] == LAYERS_WITH_PE[kind]['mpvg']
    assert osp.getsize(tmp_path / 'heat' / 'pe_heatmaps.png') > 1000

    last_ln = load_tool('last_ln_stats').main
    norm_map = load_tool('token_norm_map').main
    if kind == 'ceit':
        with pytest.raises(ValueError, match='LCA token'):
            last_ln(common + ['--out-dir', str(tmp_path / 'last')])
        with pytest.raises(ValueError, match='LCA token'):
            norm_map(common + ['--out-dir', str(tmp_path / 'norm')])
    else:
        stats = last_ln(common + ['--out-dir', str(tmp_path / 'last')])
        assert stats['pooled'] == 'mean over tokens'
        assert 'cosine_of_batch_means_ln_only' in stats
        grids = norm_map(common + ['--num-images', '1', '--out-dir',
                                   str(tmp_path / 'norm')])['images'][0]
        assert np.asarray(grids['grids']['before_last_norm']).shape == (4, 4)
