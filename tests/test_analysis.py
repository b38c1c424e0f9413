"""Analysis tools (tools/analysis/, mmmpvg.analysis): numbers and figures."""
import importlib.util
import json
import math
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401  (registers PEVisionTransformer)
from mmmpvg.analysis import (PECapture, cosine, find_pe_backbone, pearson,
                             summarize, token_norms)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'mpvg_vit-micro_digits.py')
TINY_ARCH = dict(embed_dims=32, num_layers=3, num_heads=2,
                 feedforward_channels=64)
# The paper's pairing of method and pooling (MPVG needs GAP).
POOL = dict(default='cls', lape='cls', pvg='avg', mpvg='avg')
LAYERS_WITH_PE = dict(default=[], lape=[0, 1, 2], pvg=[1, 2], mpvg=[1, 2])

TINY_CONFIG = """
custom_imports = dict(imports=['mmmpvg.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='PEVisionTransformer',
        arch=dict(embed_dims=32, num_layers=3, num_heads=2,
                  feedforward_channels=64),
        img_size=32, patch_size=8, global_pool={pool!r},
        pe_cfg=dict(method={method!r})),
    neck=None,
    head=dict(type='LinearClsHead', num_classes=10, in_channels=32),
    data_preprocessor=dict(mean=[127.5] * 3, std=[64.0] * 3, to_rgb=True))
"""


def load_tool(name):
    path = osp.join(REPO, 'tools', 'analysis', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'analysis_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_backbone(method, seed=0):
    """A tiny backbone whose LayerNorms are not the identity."""
    torch.manual_seed(seed)
    backbone = MODELS.build(dict(
        type='PEVisionTransformer', arch=TINY_ARCH, img_size=32,
        patch_size=8, global_pool=POOL[method], pe_cfg=dict(method=method)))
    backbone.init_weights()
    for module in backbone.modules():
        if isinstance(module, nn.LayerNorm):
            module.weight.normal_(1.0, 0.3)
            module.bias.normal_(0.0, 0.3)
    backbone.pos_embed.normal_(0.0, 1.0)
    backbone.eval()
    return backbone


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def capture(backbone, images):
    with PECapture(backbone) as hooks:
        output = backbone(images)[0]
        return hooks.pop(), output


def layer_norm(x, norm):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias,
                        norm.eps)


def centred_orthonormal_pair(size, seed=0):
    """Two zero-mean, unit-norm, orthogonal vectors."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(size, 2, generator=generator, dtype=torch.float64)
    basis -= basis.mean(dim=0)
    q, _ = torch.linalg.qr(basis)
    return q[:, 0], q[:, 1]


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    """Random images of sizes other than the model's, as a user's would be."""
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for index, (h, w) in enumerate([(40, 48), (32, 32), (64, 40)]):
        mmcv.imwrite(rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                     str(folder / f'img_{index}.png'))
    return str(folder)


@pytest.fixture(scope='module')
def tiny_configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp('configs')
    paths = {}
    for method, pool in POOL.items():
        paths[method] = str(folder / f'tiny_{method}.py')
        with open(paths[method], 'w') as f:
            f.write(TINY_CONFIG.format(method=method, pool=pool))
    return paths


def assert_png(path):
    assert osp.getsize(path) > 1000, path
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n', path


# --- statistics -----------------------------------------------------------

def test_pearson_matches_numpy_and_a_constructed_correlation():
    torch.manual_seed(0)
    maps = torch.randn(4, 6, 5)
    pe = torch.randn(6, 5) + 0.5 * maps[0]
    expected = [np.corrcoef(m.flatten().numpy(), pe.flatten().numpy())[0, 1]
                for m in maps]
    np.testing.assert_allclose(pearson(maps, pe).numpy(), expected,
                               rtol=1e-10)

    u, v = centred_orthonormal_pair(30)
    for rho in (0.6, -0.25, 1.0):
        a = (rho * u + math.sqrt(1 - rho**2) * v).reshape(6, 5)
        assert pearson(3.0 * a + 2.0, u.reshape(6, 5)).item() == \
            pytest.approx(rho, abs=1e-12)
    assert math.isnan(pearson(torch.ones(6, 5), pe).item())


def test_cosine_matches_numpy():
    a, b = torch.randn(3, 8), torch.randn(3, 8)
    expected = [np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y)
                for x, y in zip(a.double().numpy(), b.double().numpy())]
    np.testing.assert_allclose(cosine(a, b).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize('method', list(POOL))
def test_capture_returns_what_each_module_computes(method):
    backbone = build_backbone(method)
    images = torch.randn(2, 3, 32, 32)
    record, output = capture(backbone, images)

    tokens, grid = backbone.embed(images)
    pos = backbone.resized_pos_embed(grid)
    x0 = tokens + pos if method != 'lape' else tokens
    torch.testing.assert_close(record.layer_inputs[0], x0)
    assert record.grid_size == (4, 4)

    # PE chain: hierarchical LN'_l from pos_0 (Eq. 7 / 10), module weights.
    previous = pos
    for layer in range(len(backbone.layers)):
        if layer in LAYERS_WITH_PE[method]:
            norm = backbone.pe.layer_norms[str(layer)]
            previous = layer_norm(previous, norm)
            torch.testing.assert_close(record.layer_pe[layer], previous)
        else:
            assert record.layer_pe[layer] is None

    for layer, module in enumerate(backbone.layers):
        x = record.layer_inputs[layer]
        torch.testing.assert_close(record.layer_ln1[layer],
                                   layer_norm(x, module.ln1))
        x_next = module(x, grid, record.layer_pe[layer])
        following = (record.layer_inputs[layer + 1]
                     if layer + 1 < len(backbone.layers)
                     else record.last_norm_input)
        torch.testing.assert_close(following, x_next)
    torch.testing.assert_close(
        record.last_norm_output,
        layer_norm(record.last_norm_input, backbone.ln1))
    if method == 'mpvg':
        torch.testing.assert_close(
            record.plan.to_last_norm,
            layer_norm(pos, backbone.pe.last_pos_norm))
    else:
        assert record.plan.to_last_norm is None
    # Pooling the captured output tokens gives the backbone's own output.
    torch.testing.assert_close(record.pool(record.output_tokens), output)


def test_capture_unhooks_and_refuses_incomplete_passes():
    backbone = build_backbone('pvg')
    with PECapture(backbone) as hooks:
        with pytest.raises(RuntimeError, match='No forward pass'):
            hooks.pop()
        backbone(torch.randn(1, 3, 32, 32))
        with pytest.raises(RuntimeError, match='ran twice'):
            backbone(torch.randn(1, 3, 32, 32))
    hooked = [m for m in backbone.modules()
              if m._forward_hooks or m._forward_pre_hooks]
    assert hooked == []
    with pytest.raises(ValueError, match='exactly one mmmpvg PE backbone'):
        find_pe_backbone(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize('method', ['pvg', 'mpvg'])
def test_capture_works_inside_a_vit_adapter(method):
    """ViT-Adapter runs the same layers between its interaction blocks, on
    the whole image also with window attention, and no Last LN by default."""
    from mmmpvg.adapter import ViTAdapter
    small = dict(arch=TINY_ARCH, img_size=32, patch_size=16,
                 interaction_indexes=[[0, 1], [2, 2]], deform_num_heads=2,
                 norm_cfg=dict(type='BN'), pe_cfg=dict(method=method))
    torch.manual_seed(0)
    adapter = ViTAdapter(**small)
    adapter.eval()
    record, _ = capture(adapter, torch.randn(2, 3, 64, 64))
    assert record.grid_size == (4, 4)
    assert [i for i, pe in enumerate(record.layer_pe) if pe is not None] \
        == LAYERS_WITH_PE[method]
    for layer, module in enumerate(adapter.layers):
        torch.testing.assert_close(
            record.layer_ln1[layer],
            layer_norm(record.layer_inputs[layer], module.ln1))
    summary = summarize(adapter, [record])
    assert summary.last_norm is None
    assert summary.layer_pearson()[0] is None
    with_last_norm = ViTAdapter(vit_last_norm=True, **small)
    with_last_norm.eval()
    record, _ = capture(with_last_norm, torch.randn(2, 3, 64, 64))
    assert summarize(with_last_norm, [record]).last_norm is not None

    windowed = ViTAdapter(window_attn=True, window_size=2, **small)
    windowed.eval()
    record, _ = capture(windowed, torch.randn(1, 3, 64, 64))
    assert [tuple(x.shape) for x in record.layer_inputs] == [(1, 16, 32)] * 3


@pytest.mark.parametrize('method', ['lape', 'mpvg'])
def test_summary_finds_a_correlation_set_through_the_weights(method):
    """ln1 and the PE LNs with gamma=0 output their beta on every token, so
    r(LN_l(x_l), pe_l) is r(beta of ln1, beta of LN'_l), chosen here."""
    backbone = build_backbone(method)
    u, v = centred_orthonormal_pair(TINY_ARCH['embed_dims'])
    wanted = {0: 0.3, 1: 0.6, 2: -0.8}
    for layer in LAYERS_WITH_PE[method]:
        rho = wanted[layer]
        backbone.layers[layer].ln1.weight.zero_()
        backbone.layers[layer].ln1.bias.copy_(
            rho * u + math.sqrt(1 - rho**2) * v + 0.1)
        backbone.pe.layer_norms[str(layer)].weight.zero_()
        backbone.pe.layer_norms[str(layer)].bias.copy_(2.0 * u - 0.3)
    if method == 'mpvg':
        backbone.ln1.weight.zero_()
        backbone.ln1.bias.copy_(-0.5 * u + math.sqrt(0.75) * v)
        backbone.pe.last_pos_norm.weight.zero_()
        backbone.pe.last_pos_norm.bias.copy_(u)
    records = [capture(backbone, torch.randn(n, 3, 32, 32))[0]
               for n in (3, 2)]
    summary = summarize(backbone, records)

    expected = [wanted[layer] if layer in LAYERS_WITH_PE[method] else None
                for layer in range(3)]
    expected = [None if r is None else pytest.approx(r, abs=1e-6)
                for r in expected]
    assert summary.layer_pearson() == expected
    assert summary.pearson_per_image == expected
    if method == 'mpvg':
        assert summary.last_norm.pearson() == pytest.approx(-0.5, abs=1e-6)
    else:
        assert summary.last_norm.pearson() is None


@pytest.mark.parametrize('method', ['default', 'mpvg'])
def test_summary_averages_over_all_images(method):
    backbone = build_backbone(method)
    batches = [torch.randn(n, 3, 32, 32) for n in (3, 2)]
    records = [capture(backbone, images)[0] for images in batches]
    summary = summarize(backbone, records)
    assert summary.num_images == 5

    # Direct computation: ln1 of the captured inputs, run by the module.
    for layer, module in enumerate(backbone.layers):
        ln1 = torch.cat([module.ln1(r.layer_inputs[layer])
                         for r in records]).double()
        torch.testing.assert_close(summary.token_ln1[layer], ln1.mean(0))
        pe = records[0].layer_pe[layer]
        if pe is None:
            assert summary.layer_pearson()[layer] is None
            continue
        pe = pe[0].double().numpy().ravel()
        assert summary.layer_pearson()[layer] == pytest.approx(
            np.corrcoef(ln1.mean(0).numpy().ravel(), pe)[0, 1], abs=1e-10)
        assert summary.pearson_per_image[layer] == pytest.approx(np.mean(
            [np.corrcoef(m.numpy().ravel(), pe)[0, 1] for m in ln1]),
            abs=1e-10)

    # Pooled token before the Last LN, by running the layers; after it,
    # the backbone's own output.
    before, after = [], []
    for images in batches:
        x, grid = backbone.embed(images)
        plan = backbone.pe_plan(grid)
        if plan.to_input is not None:
            x = x + plan.to_input
        for layer, pe in zip(backbone.layers, plan.per_layer):
            x = layer(x, grid, pe)
        before.append(x[:, 0] if POOL[method] == 'cls' else x.mean(1))
        after.append(backbone(images)[0])
    before = torch.cat(before).double().numpy()
    after = torch.cat(after).double().numpy()

    def cos(a, b):
        return np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)

    assert summary.last_norm.cosine_of_means() == pytest.approx(
        cos(before.mean(0), after.mean(0)), abs=1e-6)
    assert summary.last_norm.cosine_per_image == pytest.approx(
        np.mean([cos(a, b) for a, b in zip(before, after)]), abs=1e-6)
    assert summary.last_norm.beta_variance() == pytest.approx(
        np.var(backbone.ln1.bias.detach().double().numpy()), rel=1e-12)


def test_token_norms_follow_the_patch_grid():
    """Patch token n (row-major on the h x w grid) must land at (n // w,
    n % w); the class token stays off the grid."""
    backbone = build_backbone('default')
    record, _ = capture(backbone, torch.randn(1, 3, 32, 24))
    assert record.grid_size == (4, 3)
    tokens = torch.zeros(1, 1 + 12, 32)
    tokens[0, 0, 0] = 100.0
    tokens[0, 1:, 5] = torch.arange(12.0) + 1.0
    grid = token_norms(record, tokens)
    assert grid.shape == (1, 4, 3)
    torch.testing.assert_close(
        grid[0], (torch.arange(12.0) + 1.0).reshape(4, 3).double())


# --- the command-line tools -----------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize('method', list(POOL))
def test_tools_write_figures_and_numbers_for_every_method(
        method, tiny_configs, image_dir, tmp_path):
    config = tiny_configs[method]
    common = [config, 'none', '--images', image_dir, '--batch-size', '2']

    heat = load_tool('pe_heatmaps').main(
        common + ['--out-dir', str(tmp_path / 'heat')])
    assert_png(tmp_path / 'heat' / 'pe_heatmaps.png')
    with open(tmp_path / 'heat' / 'pe_heatmaps.json') as f:
        saved = json.load(f)
    assert saved['num_images'] == 3
    assert saved['layers_with_pe'] == LAYERS_WITH_PE[method]
    pearsons = [c['pearson'] for c in saved['columns']]
    assert [i for i, r in enumerate(pearsons[:3]) if r is not None] == \
        LAYERS_WITH_PE[method]
    assert (pearsons[-1] is not None) == (method == 'mpvg')
    assert (saved['note'] is not None) == (method == 'default')
    if method != 'lape':  # layer 0 shows the PE added to the input
        assert saved['columns'][0]['pe_map'].startswith('pos_0')
    maps = np.load(tmp_path / 'heat' / 'pe_heatmaps.npz')
    assert maps['layer_0/tokens'].shape == (16 + (POOL[method] == 'cls'), 32)
    assert heat == saved

    stats = load_tool('last_ln_stats').main(
        common + ['--out-dir', str(tmp_path / 'last')])
    assert_png(tmp_path / 'last' / 'last_ln_stats.png')
    assert stats['pooled'] == ('class token' if POOL[method] == 'cls'
                               else 'mean over tokens')
    assert -1.0 <= stats['cosine_of_batch_means'] <= 1.0
    assert ('cosine_of_batch_means_ln_only' in stats) == (method == 'mpvg')

    norms = load_tool('token_norm_map').main(
        common + ['--num-images', '2', '--out-dir', str(tmp_path / 'norm')])
    assert_png(tmp_path / 'norm' / 'token_norm_maps.png')
    assert len(norms['images']) == 2
    grids = norms['images'][0]['grids']
    assert sorted(grids) == sorted(
        ['before_last_norm', 'after_last_norm']
        + (['output'] if method == 'mpvg' else []))
    assert np.asarray(grids['before_last_norm']).shape == (4, 4)


@pytest.mark.slow
def test_correlation_tool_puts_several_models_on_one_plot(
        tiny_configs, image_dir, tmp_path):
    argv = []
    for method, config in tiny_configs.items():
        argv += ['--model', config, 'none', method.upper()]
    results = load_tool('pe_correlation').main(
        argv + ['--images', image_dir, '--out-dir', str(tmp_path)])
    assert_png(tmp_path / 'pe_correlation.png')
    with open(tmp_path / 'pe_correlation.json') as f:
        saved = json.load(f)['models']
    assert [m['label'] for m in saved] == ['DEFAULT', 'LAPE', 'PVG', 'MPVG']
    for model in saved:
        method = model['method']
        assert [i for i, r in enumerate(model['pearson']) if r is not None] \
            == LAYERS_WITH_PE[method]
        assert (model['last_norm_pearson'] is not None) == (method == 'mpvg')
    assert len(results) == 4
    with pytest.raises(SystemExit):
        load_tool('pe_correlation').parse_args(
            ['--model', tiny_configs['pvg'], '--out-dir', str(tmp_path)])


@pytest.mark.slow
def test_tools_load_a_checkpoint_and_reject_one_that_does_not_fit(
        tiny_configs, image_dir, tmp_path):
    from mmmpvg.analysis.loading import load_model
    model, _ = load_model(tiny_configs['pvg'], 'none', seed=3)
    model.backbone.pos_embed.normal_(0.0, 1.0)
    checkpoint = str(tmp_path / 'pvg.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)),
               checkpoint)
    load_tool('pe_heatmaps').main([
        tiny_configs['pvg'], checkpoint, '--images', image_dir,
        '--out-dir', str(tmp_path / 'out')])
    maps = np.load(tmp_path / 'out' / 'pe_heatmaps.npz')
    np.testing.assert_allclose(maps['layer_0/pe'],
                               model.backbone.pos_embed[0].double().numpy())

    with pytest.raises(ValueError, match='does not fit the backbone'):
        load_model(tiny_configs['mpvg'], checkpoint)  # no LN''
    with pytest.raises(ValueError, match='does not fit the model'):
        load_model(tiny_configs['lape'], checkpoint)  # class token row
    with pytest.raises(FileNotFoundError, match='not found'):
        load_model(tiny_configs['pvg'], str(tmp_path / 'missing.pth'))


@pytest.mark.slow
def test_tools_read_the_data_set_of_a_config(tmp_path):
    """configs/demo (scikit-learn digits, 32x32, patch 8: a 4x4 grid)."""
    stats = load_tool('last_ln_stats').main([
        DEMO_CONFIG, 'none', '--split', 'val', '--num-images', '20',
        '--batch-size', '8', '--out-dir', str(tmp_path)])
    assert stats['num_images'] == 20
    assert stats['method'] == 'mpvg'
    assert_png(tmp_path / 'last_ln_stats.png')

    norms = load_tool('token_norm_map').main([
        osp.join(REPO, 'configs', 'demo', 'default_vit-micro_digits.py'),
        'none', '--split', 'test', '--num-images', '2',
        '--out-dir', str(tmp_path)])
    assert np.asarray(
        norms['images'][1]['grids']['after_last_norm']).shape == (4, 4)
    assert norms['images'][1]['class_token_norms']['before_last_norm'] > 0
    assert_png(tmp_path / 'token_norm_maps.png')


def test_tools_explain_bad_input(tiny_configs, tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='No images'):
        load_tool('pe_heatmaps').main([
            tiny_configs['pvg'], 'none', '--images', str(empty),
            '--out-dir', str(tmp_path)])


@pytest.mark.parametrize('name,words', [
    ('pe_heatmaps', ['LN_l(x_l)', 'pos_0', 'Pearson', 'averaged over']),
    ('pe_correlation', ['Pearson', 'mean over images', 'Default']),
    ('last_ln_stats', ['var(beta)', 'class token', 'mean over']),
    ('token_norm_map', ['L2 norm', 'x_out', 'patch grid']),
])
def test_help_states_the_definitions(name, words, capsys):
    with pytest.raises(SystemExit):
        load_tool(name).parse_args(['--help'])
    text = capsys.readouterr().out
    for word in words:
        assert word in text


@pytest.mark.slow
def test_token_norm_map_draws_at_most_16_rows_in_the_work_dir(
        tmp_path, monkeypatch):
    """Without --out-dir the tool writes beside the config's training run;
    the figure holds 16 images (rows) at most, the JSON every image."""
    from PIL import Image
    tool = load_tool('token_norm_map')
    monkeypatch.chdir(tmp_path)
    norms = tool.main([
        osp.join(REPO, 'configs', 'demo', 'default_vit-micro_digits.py'),
        'none', '--split', 'test', '--num-images', '20'])
    assert len(norms['images']) == 20
    png = tmp_path / ('work_dirs/default_vit-micro_digits/token_norm_map/'
                      'token_norm_maps.png')
    width, height = Image.open(png).size
    assert tool.MAX_FIGURE_ROWS == 16
    # rows x inches x dpi (matplotlib truncates to whole pixels)
    assert abs(height - 16 * 2.7 * 110) < 1
    assert abs(width - 3 * 2.9 * 110) < 1
