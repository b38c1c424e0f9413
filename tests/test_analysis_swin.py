"""The analysis tools (Fig. 2, 4, 6, 7) on a staged backbone: tiny Swin."""
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

import mmmpvg.models  # noqa: F401  (registers PESwinTransformer)
from mmmpvg.analysis import PECapture, find_pe_backbone, summarize

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = dict(arch=dict(embed_dims=16, depths=[2, 2, 2, 2],
                      num_heads=[1, 2, 2, 4]),
            img_size=64, patch_size=2, window_size=4, drop_path_rate=0.)
GRIDS = [(32, 32)] * 2 + [(16, 16)] * 2 + [(8, 8)] * 2 + [(4, 4)] * 2
DIMS = [16] * 2 + [32] * 2 + [64] * 2 + [128] * 2
LAYERS_WITH_PE = dict(default=[], lape=list(range(8)), pvg=list(range(8)),
                      mpvg=list(range(8)))

TINY_CONFIG = """
custom_imports = dict(imports=['mmmpvg.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='PESwinTransformer',
        arch=dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4]),
        img_size=64, patch_size=2, window_size=4,
        pe_cfg=dict(method={method!r})),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=128),
    data_preprocessor=dict(mean=[127.5] * 3, std=[64.0] * 3, to_rgb=True))
"""


def load_tool(name):
    path = osp.join(REPO, 'tools', 'analysis', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'swin_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_backbone(method, seed=0):
    """A tiny Swin whose LayerNorms are not the identity."""
    torch.manual_seed(seed)
    backbone = MODELS.build(dict(type='PESwinTransformer',
                                 pe_cfg=dict(method=method), **TINY))
    backbone.init_weights()
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
        backbone.absolute_pos_embed.normal_(0.0, 1.0)
    return backbone.eval()


def layer_norm(x, norm):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias,
                        norm.eps)


@pytest.mark.parametrize('method', list(LAYERS_WITH_PE))
def test_capture_records_each_stage_at_its_grid_and_width(method):
    backbone = build_backbone(method)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), PECapture(backbone) as hooks:
        (featmap, ) = backbone(images)
        record = hooks.pop()
    assert record.grid_size == (32, 32)
    assert record.layer_grids == GRIDS
    assert [i for i, pe in enumerate(record.layer_pe) if pe is not None] \
        == LAYERS_WITH_PE[method]
    for layer, (block, grid, dims) in enumerate(
            zip(backbone.pe_blocks(), GRIDS, DIMS)):
        x = record.layer_inputs[layer]
        assert x.shape == (2, grid[0] * grid[1], dims)
        torch.testing.assert_close(record.layer_ln1[layer],
                                   layer_norm(x, block.norm1))
        if record.layer_pe[layer] is not None:
            assert record.layer_pe[layer].shape == (1, grid[0] * grid[1],
                                                    dims)
    torch.testing.assert_close(
        record.last_norm_output,
        layer_norm(record.last_norm_input, backbone.norm3))
    assert (record.plan.to_last_norm is not None) == (method == 'mpvg')
    # Laid out on the last stage's grid, the output tokens are the featmap.
    torch.testing.assert_close(
        record.patch_grid(record.output_tokens).permute(0, 3, 1, 2),
        featmap)
    torch.testing.assert_close(record.pool(record.output_tokens),
                               featmap.mean(dim=(2, 3)))


def test_summary_keeps_each_stage_shape():
    backbone = build_backbone('mpvg')
    records = []
    with torch.no_grad(), PECapture(backbone) as hooks:
        for seed in range(2):
            torch.manual_seed(seed)
            backbone(torch.randn(2, 3, 64, 64))
            records.append(hooks.pop())
    summary = summarize(backbone, records)
    assert summary.num_images == 4
    assert [tuple(m.shape) for m in summary.token_ln1] == [
        (g[0] * g[1], d) for g, d in zip(GRIDS, DIMS)]
    assert summary.layers_with_pe == list(range(8))
    assert all(-1 <= r <= 1 for r in summary.layer_pearson())
    assert summary.last_norm.pe.shape == (16, 128)
    assert summary.last_norm.gamma.shape == (128, )


def test_find_pe_backbone_finds_swin_in_a_classifier(tmp_path):
    path = tmp_path / 'tiny_swin.py'
    path.write_text(TINY_CONFIG.format(method='pvg'))
    from mmengine.config import Config
    model = MODELS.build(Config.fromfile(str(path)).model)
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
@pytest.mark.parametrize('method', ['default', 'mpvg'])
def test_tools_write_figures_and_numbers_for_swin(method, image_dir,
                                                  tmp_path):
    config = tmp_path / f'tiny_swin_{method}.py'
    config.write_text(TINY_CONFIG.format(method=method))
    common = [str(config), 'none', '--images', image_dir, '--batch-size',
              '2']

    heat = load_tool('pe_heatmaps').main(
        common + ['--out-dir', str(tmp_path / 'heat')])
    assert osp.getsize(tmp_path / 'heat' / 'pe_heatmaps.png') > 1000
    assert heat['layers_with_pe'] == LAYERS_WITH_PE[method]
    maps = np.load(tmp_path / 'heat' / 'pe_heatmaps.npz')
    for layer, (grid, dims) in enumerate(zip(GRIDS, DIMS)):
        assert maps[f'layer_{layer}/tokens'].shape == (grid[0] * grid[1],
                                                       dims)

    corr = load_tool('pe_correlation').main(
        ['--model', str(config), 'none', '--images', image_dir,
         '--out-dir', str(tmp_path / 'corr')])
    with open(tmp_path / 'corr' / 'pe_correlation.json') as f:
        saved = json.load(f)['models'][0]
    assert saved['pearson'] == corr[0]['pearson']
    assert [i for i, r in enumerate(saved['pearson']) if r is not None] \
        == LAYERS_WITH_PE[method]

    stats = load_tool('last_ln_stats').main(
        common + ['--out-dir', str(tmp_path / 'last')])
    assert stats['pooled'] == 'mean over tokens'
    assert ('cosine_of_batch_means_ln_only' in stats) == (method == 'mpvg')

    norms = load_tool('token_norm_map').main(
        common + ['--num-images', '2', '--out-dir', str(tmp_path / 'norm')])
    grids = norms['images'][0]['grids']
    assert np.asarray(grids['before_last_norm']).shape == (4, 4)
