"""Analysis tools (tools/analysis/, mmmpvg.analysis): numbers and figures,
for every backbone family through the contract (the capture hooks
``backbone.pe_blocks()`` and their norms, calls ``block(x, hw_shape, pe)``);
the statistics, the ViT-Adapter and the data-set input on DeiT."""
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
from mmengine.config import Config

from mmmpvg.analysis import (PECapture, cosine, find_pe_backbone, pearson,
                             summarize, token_norms)
from pe_families import (FAMILIES, METHODS, PE_IN_LAYER0, POOLED_LAST_NORM,
                         VIT_ARCH, backbone_cfg, build, classifier,
                         classifier_cfg, images, randomise, uses_class_token)
from pe_reference import method_rules

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'mpvg_vit-micro_digits.py')
CASES = [(f, m) for f in FAMILIES for m in METHODS]


def load_tool(name):
    path = osp.join(REPO, 'tools', 'analysis', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'analysis_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pe_rules(family, method, num_layers):
    return method_rules(method, num_layers, family in PE_IN_LAYER0)


def deit_backbone(method, seed=0):
    """The tiny DeiT with random weights (no identity LayerNorm)."""
    return randomise(build(backbone_cfg('deit', method)), seed).eval()


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def capture(backbone, inputs):
    with PECapture(backbone) as hooks:
        output = backbone(inputs)[0]
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
def tiny_config(tmp_path_factory):
    """``tiny_config(family, method)``: a config file of the tiny classifier
    (written once per module)."""
    folder = tmp_path_factory.mktemp('configs')

    def write(family, method):
        path = folder / f'tiny_{family}_{method}.py'
        if not path.exists():
            model = classifier_cfg(
                backbone_cfg(family, method), num_classes=10,
                data_preprocessor=dict(mean=[127.5] * 3, std=[64.0] * 3,
                                       to_rgb=True))
            Config(dict(custom_imports=dict(imports=['mmmpvg.models'],
                                            allow_failed_imports=False),
                        default_scope='mmpretrain', model=model)).dump(
                str(path))
        return str(path)

    return write


def assert_png(path):
    assert osp.getsize(path) > 1000, path
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n', path


# --- capture, every family ------------------------------------------------

def reference_plan(backbone, grid):
    """pe_l of every layer and LN''(pos_0), written out: LN'_l applied along
    the layers from pos_0 (Eq. 9 / 10); over a stage boundary the PEs take
    the tokens' downsampling."""
    norms = backbone.pe.layer_norms
    chain = pos = backbone.resized_pos_embed(grid)
    per_layer = []
    for stage in backbone.pe_stages():
        for _ in stage.blocks:
            layer = str(len(per_layer))
            if layer in norms:
                chain = layer_norm(chain, norms[layer])
            per_layer.append(chain if layer in norms else None)
        if stage.downsample is not None:
            chain, _ = stage.downsample(chain, grid)
            pos, grid = stage.downsample(pos, grid)
    last = backbone.pe.last_pos_norm
    return per_layer, None if last is None else layer_norm(pos, last)


@pytest.mark.parametrize('family,method', CASES)
def test_capture_records_what_each_module_computes(family, method):
    model = classifier(family, method)
    backbone = model.backbone
    with PECapture(backbone) as hooks:
        (pooled, ) = model.extract_feat(images(family))
        record = hooks.pop()
    rules = pe_rules(family, method, backbone.pe.num_layers)
    assert record.grid_size == backbone.pe.grid_size
    pos = backbone.resized_pos_embed(record.grid_size)
    if rules['add']:
        torch.testing.assert_close(record.plan.to_input, pos)
    else:
        assert record.plan.to_input is None

    # PE chain: hierarchical LN'_l from pos_0, module weights.
    per_layer, to_last_norm = reference_plan(backbone, record.grid_size)
    assert [i for i, pe in enumerate(record.layer_pe) if pe is not None] \
        == rules['layers']
    for layer, pe in enumerate(per_layer):
        if pe is not None:
            torch.testing.assert_close(record.layer_pe[layer], pe)
    assert (record.plan.to_last_norm is not None) == rules['last']
    if rules['last']:
        torch.testing.assert_close(record.plan.to_last_norm, to_last_norm)

    # Each layer: its norm's output is LN_l(x_l), and running the layer (and
    # a stage's downsampling) on what was recorded gives the next input.
    layer, x_next, grid_next = 0, None, record.grid_size
    for stage in backbone.pe_stages():
        for block in stage.blocks:
            x, grid = record.layer_inputs[layer], record.layer_grids[layer]
            assert grid == grid_next
            assert x.shape == (2, grid[0] * grid[1]
                               + backbone.num_extra_tokens,
                               backbone.pe.layer_dims[layer])
            if x_next is not None:
                torch.testing.assert_close(x, x_next)
            torch.testing.assert_close(record.layer_ln1[layer],
                                       layer_norm(x, block.pe_norm))
            assert record.patch_grid(record.layer_ln1[layer]).shape == (
                2, *grid, x.shape[-1])
            x_next = block(x, grid, record.layer_pe[layer])
            layer += 1
        if stage.downsample is not None:
            x_next, grid_next = stage.downsample(x_next, grid)
    assert layer == len(record.layer_inputs)
    if family in POOLED_LAST_NORM:  # see its own file
        return
    torch.testing.assert_close(record.last_norm_input, x_next)
    torch.testing.assert_close(
        record.last_norm_output,
        layer_norm(x_next, backbone.pe_last_norm()))
    # Pooling the captured output tokens gives what the neck/head gets.
    torch.testing.assert_close(record.pool(record.output_tokens), pooled)


@pytest.mark.parametrize('family', FAMILIES)
def test_summary_keeps_each_layers_shape_and_finds_the_backbone(family):
    model = classifier(family, 'mpvg')
    backbone = find_pe_backbone(model)
    assert backbone is model.backbone
    records = []
    with PECapture(backbone) as hooks:
        for seed in range(2):
            backbone(images(family, seed=seed))
            records.append(hooks.pop())
    summary = summarize(backbone, records)
    assert summary.num_images == 4
    assert [tuple(m.shape) for m in summary.token_ln1] == [
        tuple(x.shape[1:]) for x in records[0].layer_inputs]
    layers = pe_rules(family, 'mpvg', backbone.pe.num_layers)['layers']
    assert summary.layers_with_pe == layers
    pearsons = summary.layer_pearson()
    assert len(pearsons) == backbone.pe.num_layers
    assert [i for i, r in enumerate(pearsons) if r is not None] == layers
    assert all(-1 <= r <= 1 for r in pearsons if r is not None)
    if family not in POOLED_LAST_NORM:
        (h, w), dims = records[0].layer_grids[-1], backbone.pe.layer_dims[-1]
        assert summary.last_norm.pe.shape == (h * w, dims)
        assert summary.last_norm.gamma.shape == (dims, )


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


# --- DeiT ------------------------------------------------------------------

@pytest.mark.parametrize('method', METHODS)
def test_layer_0_gets_the_patch_tokens_with_pos_0_added(method):
    """x_0 against the patch embedding's own output (LaPE adds no pos_0)."""
    backbone = deit_backbone(method)
    x = images('deit')
    record, _ = capture(backbone, x)
    tokens, grid = backbone.embed(x)
    pos = backbone.resized_pos_embed(grid)
    torch.testing.assert_close(record.layer_inputs[0],
                               tokens if method == 'lape' else tokens + pos)


def test_capture_unhooks_and_refuses_incomplete_passes():
    backbone = deit_backbone('pvg')
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
    arch = dict(VIT_ARCH, num_layers=3)
    small = dict(arch=arch, img_size=32, patch_size=16,
                 interaction_indexes=[[0, 1], [2, 2]], deform_num_heads=2,
                 norm_cfg=dict(type='BN'), pe_cfg=dict(method=method))
    torch.manual_seed(0)
    adapter = ViTAdapter(**small)
    adapter.eval()
    record, _ = capture(adapter, torch.randn(2, 3, 64, 64))
    assert record.grid_size == (4, 4)
    assert [i for i, pe in enumerate(record.layer_pe) if pe is not None] \
        == pe_rules('deit', method, 3)['layers']
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
    backbone = deit_backbone(method)
    u, v = centred_orthonormal_pair(VIT_ARCH['embed_dims'])
    wanted = {0: 0.3, 1: 0.6, 2: -0.8, 3: 0.45}
    layers = pe_rules('deit', method, len(wanted))['layers']
    for layer in layers:
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

    expected = [pytest.approx(wanted[layer], abs=1e-6) if layer in layers
                else None for layer in range(len(wanted))]
    assert summary.layer_pearson() == expected
    assert summary.pearson_per_image == expected
    if method == 'mpvg':
        assert summary.last_norm.pearson() == pytest.approx(-0.5, abs=1e-6)
    else:
        assert summary.last_norm.pearson() is None


@pytest.mark.parametrize('method', ['default', 'mpvg'])
def test_summary_averages_over_all_images(method):
    backbone = deit_backbone(method)
    batches = [torch.randn(n, 3, 32, 32) for n in (3, 2)]
    records = [capture(backbone, batch)[0] for batch in batches]
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
    for batch in batches:
        x, grid = backbone.embed(batch)
        plan = backbone.pe_plan(grid)
        if plan.to_input is not None:
            x = x + plan.to_input
        for layer, pe in zip(backbone.layers, plan.per_layer):
            x = layer(x, grid, pe)
        before.append(x[:, 0] if uses_class_token('deit', method)
                      else x.mean(1))
        after.append(backbone(batch)[0])
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
    backbone = deit_backbone('default')
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

# Every method on DeiT; elsewhere a class-token method (none on Swin) and
# MPVG.
TOOL_CASES = [('deit', m) for m in METHODS] + [
    ('swin', 'default'), ('swin', 'mpvg'), ('t2t', 'lape'), ('t2t', 'mpvg'),
    ('ceit', 'mpvg'), ('vit_lite', 'lape'), ('vit_lite', 'mpvg')]


@pytest.mark.slow
@pytest.mark.parametrize('family,method', TOOL_CASES)
def test_tools_write_figures_and_numbers(family, method, tiny_config,
                                         image_dir, tmp_path):
    config = tiny_config(family, method)
    common = [config, 'none', '--images', image_dir, '--batch-size', '2']
    # What the tools should find: the layers and shapes of one pass.
    backbone = build(backbone_cfg(family, method)).eval()
    record, _ = capture(backbone, images(family))
    shapes = [tuple(x.shape[1:]) for x in record.layer_inputs]
    layers = pe_rules(family, method, len(shapes))['layers']
    last_norm = family not in POOLED_LAST_NORM

    heat = load_tool('pe_heatmaps').main(
        common + ['--out-dir', str(tmp_path / 'heat')])
    assert_png(tmp_path / 'heat' / 'pe_heatmaps.png')
    with open(tmp_path / 'heat' / 'pe_heatmaps.json') as f:
        saved = json.load(f)
    assert heat == saved
    assert saved['num_images'] == 3
    assert saved['layers_with_pe'] == layers
    pearsons = [c['pearson'] for c in saved['columns']]
    assert len(pearsons) == len(shapes) + 2 * last_norm
    assert [i for i, r in enumerate(pearsons[:len(shapes)])
            if r is not None] == layers
    if last_norm:
        assert (pearsons[-1] is not None) == (method == 'mpvg')
    assert (saved['note'] is not None) == (method == 'default')
    if method != 'lape' and 0 not in layers:  # x_0 shows pos_0 added
        assert saved['columns'][0]['pe_map'].startswith('pos_0')
    maps = np.load(tmp_path / 'heat' / 'pe_heatmaps.npz')
    assert [maps[f'layer_{i}/tokens'].shape for i in range(len(shapes))] \
        == shapes

    corr = load_tool('pe_correlation').main(
        ['--model', config, 'none', '--images', image_dir,
         '--out-dir', str(tmp_path / 'corr')])
    with open(tmp_path / 'corr' / 'pe_correlation.json') as f:
        saved = json.load(f)['models'][0]
    assert saved['pearson'] == corr[0]['pearson']
    assert len(saved['pearson']) == len(shapes)
    assert [i for i, r in enumerate(saved['pearson']) if r is not None] \
        == layers

    last_ln_stats = load_tool('last_ln_stats').main
    token_norm_map = load_tool('token_norm_map').main
    if not last_norm:
        for tool in (last_ln_stats, token_norm_map):
            with pytest.raises(ValueError, match='LCA token'):
                tool(common + ['--out-dir', str(tmp_path / 'refused')])
        return
    stats = last_ln_stats(common + ['--out-dir', str(tmp_path / 'last')])
    assert_png(tmp_path / 'last' / 'last_ln_stats.png')
    assert stats['pooled'] == ('class token' if uses_class_token(
        family, method) else 'mean over tokens')
    assert -1.0 <= stats['cosine_of_batch_means'] <= 1.0
    assert ('cosine_of_batch_means_ln_only' in stats) == (method == 'mpvg')

    norms = token_norm_map(common + ['--num-images', '2', '--out-dir',
                                     str(tmp_path / 'norm')])
    assert_png(tmp_path / 'norm' / 'token_norm_maps.png')
    assert len(norms['images']) == 2
    grids = norms['images'][0]['grids']
    assert sorted(grids) == sorted(
        ['before_last_norm', 'after_last_norm']
        + (['output'] if method == 'mpvg' else []))
    assert np.asarray(grids['before_last_norm']).shape == \
        record.layer_grids[-1]


@pytest.mark.slow
def test_correlation_tool_puts_several_models_on_one_plot(
        tiny_config, image_dir, tmp_path):
    argv = []
    for method in METHODS:
        argv += ['--model', tiny_config('deit', method), 'none',
                 method.upper()]
    results = load_tool('pe_correlation').main(
        argv + ['--images', image_dir, '--out-dir', str(tmp_path)])
    assert_png(tmp_path / 'pe_correlation.png')
    with open(tmp_path / 'pe_correlation.json') as f:
        saved = json.load(f)['models']
    assert [m['label'] for m in saved] == ['DEFAULT', 'LAPE', 'PVG', 'MPVG']
    for model in saved:
        method = model['method']
        assert [i for i, r in enumerate(model['pearson']) if r is not None] \
            == pe_rules('deit', method, VIT_ARCH['num_layers'])['layers']
        assert (model['last_norm_pearson'] is not None) == (method == 'mpvg')
    assert len(results) == 4
    with pytest.raises(SystemExit):
        load_tool('pe_correlation').parse_args(
            ['--model', tiny_config('deit', 'pvg'), '--out-dir',
             str(tmp_path)])


@pytest.mark.slow
def test_tools_load_a_checkpoint_and_reject_one_that_does_not_fit(
        tiny_config, image_dir, tmp_path):
    from mmmpvg.analysis.loading import load_model
    pvg = tiny_config('deit', 'pvg')
    model, _ = load_model(pvg, 'none', seed=3)
    model.backbone.pos_embed.normal_(0.0, 1.0)
    checkpoint = str(tmp_path / 'pvg.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)),
               checkpoint)
    load_tool('pe_heatmaps').main([
        pvg, checkpoint, '--images', image_dir,
        '--out-dir', str(tmp_path / 'out')])
    maps = np.load(tmp_path / 'out' / 'pe_heatmaps.npz')
    np.testing.assert_allclose(maps['layer_0/pe'],
                               model.backbone.pos_embed[0].double().numpy())

    with pytest.raises(ValueError, match='does not fit the backbone'):
        load_model(tiny_config('deit', 'mpvg'), checkpoint)  # no LN''
    with pytest.raises(ValueError, match='does not fit the model'):
        load_model(tiny_config('deit', 'lape'), checkpoint)  # class row
    with pytest.raises(FileNotFoundError, match='not found'):
        load_model(pvg, str(tmp_path / 'missing.pth'))


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


def test_tools_explain_bad_input(tiny_config, tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='No images'):
        load_tool('pe_heatmaps').main([
            tiny_config('deit', 'pvg'), 'none', '--images', str(empty),
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
