"""ViTAdapter over the PE-method DeiT: registries, outputs, PE delivery, the
detection / segmentation wiring of the ViT features, layer scale, window
attention, MPVG's Last LN switch, gradients, checkpoints, the deformable
attention backend, the optimizer recipes and the downstream configs, checked
against ViT-Adapter's official code (czczup/ViT-Adapter)."""
import glob
import logging
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS as DET_MODELS
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS as CLS_MODELS
from mmseg.registry import MODELS as SEG_MODELS

from mmmpvg.adapter import (ViTAdapter, WindowMultiheadAttention,
                            ms_deform_attn, select_backend)
from mmmpvg.models import PE_METHODS
from mmmpvg.models.backbones.pe_vision_transformer import PETransformerLayer

pytestmark = pytest.mark.usefixtures('one_thread')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(REPO, 'configs', 'vit_adapter')
ALL_DET_CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, 'mask-rcnn_*.py')))
ALL_SEG_CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, 'upernet_*.py')))
# One config per PE method with ViT-Adapter's structure; the *-lastln_*
# configs are our Eq. 11 extension (MPVG and its PVG control).
DET_CONFIGS = [p for p in ALL_DET_CONFIGS if '-lastln_' not in p]
SEG_CONFIGS = [p for p in ALL_SEG_CONFIGS if '-lastln_' not in p]
LASTLN_CONFIGS = [p for p in ALL_DET_CONFIGS + ALL_SEG_CONFIGS
                  if '-lastln_' in p]
METHODS = sorted(PE_METHODS)
BN = dict(type='BN', requires_grad=True)
# A small ViT for the tests that do not need DeiT-Ti itself.
SMALL = dict(embed_dims=48, num_layers=4, num_heads=3,
             feedforward_channels=96)
SMALL_ADAPTER = dict(type='ViTAdapter', arch=SMALL, img_size=64,
                     interaction_indexes=[[0, 1], [2, 3]], norm_cfg=BN)
# Four interaction blocks of one layer each, for the segmentation wiring.
FOUR_BLOCKS = [[0, 0], [1, 1], [2, 2], [3, 3]]


def build(registry=DET_MODELS, **kwargs):
    cfg = dict(SMALL_ADAPTER)
    cfg.update(kwargs)
    return registry.build(cfg)


@pytest.mark.parametrize('registry', [DET_MODELS, SEG_MODELS],
                         ids=['mmdet', 'mmseg'])
def test_ti_builds_in_both_registries_with_four_levels(registry):
    model = registry.build(dict(type='ViTAdapter', arch='deit-tiny',
                                pe_cfg=dict(method='mpvg'), norm_cfg=BN))
    assert isinstance(model, ViTAdapter)
    outs = model(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [
        (2, 192, 16, 24), (2, 192, 8, 12), (2, 192, 4, 6), (2, 192, 2, 3)]


def test_ti_defaults_follow_vit_adapter():
    model = DET_MODELS.build(dict(type='ViTAdapter'))
    assert model.embed_dims == 192 and model.num_layers == 12
    assert model.layers[0].attn.num_heads == 3
    assert model.spm.conv2.conv.in_channels == 64  # conv_inplane
    assert len(model.interactions) == 4
    assert [len(b.extractors) for b in model.interactions] == [1, 1, 1, 3]
    injector = model.interactions[0].injector
    assert injector.attn.num_heads == 6 and injector.attn.num_points == 4
    assert injector.attn.num_levels == 3
    assert injector.attn.value_proj.out_features == 192  # deform_ratio 1
    ffn = model.interactions[0].extractors[0].ffn
    assert ffn.fc1.out_features == 48  # cffn_ratio 0.25
    assert isinstance(model.out_norms[0], nn.SyncBatchNorm)
    assert isinstance(model.spm.stem[0].bn, nn.SyncBatchNorm)
    bn = build()
    assert type(bn.out_norms[0]) is nn.BatchNorm2d
    assert type(bn.spm.stem[0].bn) is nn.BatchNorm2d


@pytest.mark.parametrize('method', METHODS)
def test_vit_layers_receive_the_methods_pe_at_the_feature_grid(method):
    model = build(pe_cfg=dict(method=method))
    received = {}
    for i, layer in enumerate(model.layers):
        layer.register_forward_pre_hook(
            lambda m, args, i=i: received.setdefault(i, args[2]))
    dropout_in = []
    model.drop_after_pos.register_forward_pre_hook(
        lambda m, args: dropout_in.append(args[0]))
    img = torch.randn(1, 3, 96, 128)
    model(img)

    grid = (6, 8)
    stored = model.pos_embed.reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    pos0 = F.interpolate(stored, size=grid, mode='bicubic',
                         align_corners=False).flatten(2).transpose(1, 2)
    tokens = model.patch_embed(img)[0]
    knobs = PE_METHODS[method]
    expected_input = tokens + pos0 if knobs['add_to_input'] else tokens
    torch.testing.assert_close(dropout_in[0], expected_input)

    previous = pos0
    for i in range(model.num_layers):
        if str(i) in model.pe.layer_norms:
            expected = model.pe.layer_norms[str(i)](previous)
            torch.testing.assert_close(received[i], expected)
            previous = expected
        else:
            assert received[i] is None
    with_pe = [i for i in range(model.num_layers) if received[i] is not None]
    expected_layers = {'default': [], 'lape': [0, 1, 2, 3]}.get(method,
                                                                [1, 2, 3])
    assert with_pe == expected_layers


# ----------------------------------------------------- ViT feature wiring
def record_wiring(model, img):
    """Through hooks: each ViT layer's output, the spatial-prior and
    extractor results that make the adapter's own part of each level, the
    PE plan, and what each output BatchNorm receives."""
    seen = {}
    hooks = [model.layers[i].register_forward_hook(
        lambda m, a, out, i=i: seen.__setitem__(('layer', i), out))
        for i in range(model.num_layers)]
    hooks.append(model.spm.register_forward_hook(
        lambda m, a, out: seen.__setitem__('spm', out)))
    hooks.append(model.up.register_forward_hook(
        lambda m, a, out: seen.__setitem__('up', out)))
    hooks.append(model.interactions[-1].extractors[-1].register_forward_hook(
        lambda m, a, out: seen.__setitem__('c', out)))
    hooks.append(model.pe.register_forward_hook(
        lambda m, a, out: seen.__setitem__('plan', out)))
    hooks += [norm.register_forward_pre_hook(
        lambda m, a, i=i: seen.__setitem__(('out_norm', i), a[0]))
        for i, norm in enumerate(model.out_norms)]
    model(img)
    for hook in hooks:
        hook.remove()
    return seen


def resized(tokens, grid, scale):
    """(B, h*w, C) tokens -> (B, C, h, w), bilinearly resized by ``scale``
    (ViT-Adapter's F.interpolate; 1 = as is)."""
    maps = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
    if scale == 1:
        return maps
    return F.interpolate(maps, scale_factor=scale, mode='bilinear',
                         align_corners=False)


@pytest.mark.parametrize('source,method,last_norm', [
    ('last', 'default', False),
    ('per_interaction', 'default', False),
    ('per_interaction', 'mpvg', True),
    ('last', 'mpvg', True),
])
def test_vit_features_reach_the_levels_as_in_the_official_backbones(
        source, method, last_norm):
    """Level i = c_i + resized ViT tokens: of the last layer for every level
    (detection backbone) or of interaction block i's last layer (segmentation
    backbone); with the Last LN (our extension), the last layer's tokens are
    LN(x) + LN''(pos_0)."""
    torch.manual_seed(0)
    model = build(pe_cfg=dict(method=method), interaction_indexes=FOUR_BLOCKS,
                  vit_feature_source=source, vit_last_norm=last_norm)
    model.init_weights()
    model.eval()
    img = torch.randn(2, 3, 64, 96)
    seen = record_wiring(model, img)

    grid = (4, 6)
    c1, _ = seen['spm']
    shapes = [(8, 12), (4, 6), (2, 3)]
    c_maps = [chunk.transpose(1, 2).reshape(2, -1, h, w)
              for chunk, (h, w) in zip(
                  seen['c'].split([h * w for h, w in shapes], 1), shapes)]
    adapter_part = [seen['up'] + c1] + c_maps
    last_layer = seen[('layer', 3)]
    if last_norm:
        last_layer = model.ln1(last_layer)
        if method == 'mpvg':
            last_layer = last_layer + model.pe.last_pos_norm(
                F.interpolate(model.pos_embed.reshape(1, 4, 4, -1)
                              .permute(0, 3, 1, 2), size=grid,
                              mode='bicubic', align_corners=False)
                .flatten(2).transpose(1, 2))
    for level, scale in enumerate((4, 2, 1, 0.5)):
        if source == 'last' or level == 3:
            tokens = last_layer
        else:
            tokens = seen[('layer', level)]  # block i = layer i here
        torch.testing.assert_close(
            seen[('out_norm', level)],
            adapter_part[level] + resized(tokens, grid, scale))


def test_segmentation_wiring_takes_the_blocks_last_layers_in_ti():
    """In ViT-Adapter-Ti the blocks end after layers 2, 5, 8 and 11."""
    model = DET_MODELS.build(dict(type='ViTAdapter', norm_cfg=BN,
                                  vit_feature_source='per_interaction'))
    model.eval()
    img = torch.randn(1, 3, 64, 64)
    seen = record_wiring(model, img)
    model.add_vit_feature = False  # what the adapter's own part gives
    adapter_part = record_wiring(model, img)
    for level, (layer, scale) in enumerate(zip((2, 5, 8, 11),
                                               (4, 2, 1, 0.5))):
        torch.testing.assert_close(
            seen[('out_norm', level)] - adapter_part[('out_norm', level)],
            resized(seen[('layer', layer)], (4, 4), scale),
            atol=1e-5, rtol=1e-5)


def test_bad_wiring_is_refused():
    with pytest.raises(ValueError, match='needs 4 blocks, got 2'):
        build(vit_feature_source='per_interaction')
    with pytest.raises(ValueError, match='vit_feature_source must be one'):
        build(vit_feature_source='every')


# ------------------------------------------------------------ layer scale
def test_layer_scale_has_vit_adapters_gammas_and_mmpretrains_names():
    """ViT-Adapter's Block: x + drop_path(gamma1 * attn(norm1(x))), then
    x + drop_path(gamma2 * mlp(norm2(x))), gammas initialised to 1 (4,608 in
    Ti); names as mmpretrain's VisionTransformer(layer_scale_init_value=...)
    so mmpretrain checkpoints with layer scale load."""
    from mmpretrain.models.backbones import VisionTransformer
    model = DET_MODELS.build(dict(type='ViTAdapter', norm_cfg=BN))
    gammas = {n: p for n, p in model.named_parameters() if 'gamma' in n
              and n.startswith('layers.')}
    assert sum(p.numel() for p in gammas.values()) == 2 * 12 * 192 == 4608
    assert all(torch.equal(p, torch.ones(192)) for p in gammas.values())
    upstream = VisionTransformer(arch='deit-tiny', layer_scale_init_value=1.)
    assert set(gammas) == {n for n, _ in upstream.named_parameters()
                           if 'gamma' in n}
    # 0 builds none: DeiT and the classification backbones are unchanged.
    plain = build(layer_scale_init_value=0.)
    assert not [n for n, _ in plain.named_parameters() if 'layers.' in n
                and 'gamma' in n]


@pytest.mark.parametrize('window', [None, 3])
def test_layer_scale_scales_both_branches(window):
    layer = build(window_attn=window is not None,
                  window_size=window or 14).layers[0]
    layer.eval()
    with torch.no_grad():
        layer.attn.gamma1.weight.uniform_(-2, 2)
        layer.ffn.gamma2.weight.uniform_(-2, 2)
    branch = {}
    layer.attn.proj.register_forward_hook(
        lambda m, a, out: branch.__setitem__('attn', out))
    layer.ffn.layers.register_forward_hook(
        lambda m, a, out: branch.__setitem__('ffn', out))
    x, pe = torch.randn(2, 20, 48), torch.randn(1, 20, 48)
    out = layer(x, (4, 5), pe)
    mid = x + layer.attn.gamma1.weight * branch['attn']
    torch.testing.assert_close(
        out, mid + layer.ffn.gamma2.weight * branch['ffn'])


# -------------------------------------------------------- window attention
def official_windowed_attention(attn, x, h, w, window):
    """ViT-Adapter's WindowedAttention.forward (base/vit.py), written out
    with the module's weights: project q, k, v, zero-pad the (3C, h, w) map,
    unfold windows, attend, fold, crop, project."""
    b, n, c = x.shape
    heads = attn.num_heads
    hp = math.ceil(h / window) * window
    wp = math.ceil(w / window) * window
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)
    qkv = qkv.transpose(1, 2).reshape(b, 3 * c, h, w)
    qkv = F.pad(qkv, [0, wp - w, 0, hp - h], mode='constant')
    qkv = F.unfold(qkv, kernel_size=window, stride=window)
    num_windows = qkv.shape[-1]
    qkv = qkv.reshape(b, 3 * c, window * window, num_windows)
    qkv = qkv.permute(0, 3, 2, 1).reshape(b, num_windows, window * window, 3,
                                          heads, c // heads)
    q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)
    scores = (q @ k.transpose(-2, -1)) * (c // heads)**-0.5
    out = scores.softmax(dim=-1) @ v  # (b, windows, heads, window^2, dims)
    out = out.permute(0, 2, 4, 3, 1).reshape(b, c * window * window,
                                             num_windows)
    out = F.fold(out, output_size=(hp, wp), kernel_size=window,
                 stride=window)
    out = out[:, :, :h, :w].reshape(b, c, n).transpose(1, 2)
    return F.linear(out, attn.proj.weight, attn.proj.bias)


def official_block(layer, x, pe, h, w, window):
    """ViT-Adapter's Block with layer scale (+ the method's PE at the
    attention input): plain tensors, eval mode."""
    ln1, ln2 = layer.ln1, layer.ln2
    attn_in = F.layer_norm(x, (x.shape[-1], ), ln1.weight, ln1.bias,
                           ln1.eps) + pe
    x = x + layer.attn.gamma1.weight * official_windowed_attention(
        layer.attn, attn_in, h, w, window)
    fc1, fc2 = layer.ffn.layers[0][0], layer.ffn.layers[1]
    hidden = F.gelu(F.linear(F.layer_norm(x, (x.shape[-1], ), ln2.weight,
                                          ln2.bias, ln2.eps),
                             fc1.weight, fc1.bias))
    return x + layer.ffn.gamma2.weight * F.linear(hidden, fc2.weight,
                                                  fc2.bias)


@pytest.mark.parametrize('grid', [(5, 7), (6, 6)])
def test_zero_padded_window_attention_is_vit_adapters(grid):
    """Default padding: q, k, v zero-padded after the projection, padded
    keys in the softmax, exactly as ViT-Adapter computes it."""
    torch.manual_seed(0)
    model = build(window_attn=True, window_size=3)
    model.init_weights()
    layer = model.layers[1]
    assert isinstance(layer.attn, WindowMultiheadAttention)
    with torch.no_grad():  # random weights everywhere, gammas included
        for p in layer.parameters():
            p.normal_(0, 0.3)
    layer.eval()
    h, w = grid
    x, pe = torch.randn(2, h * w, 48), torch.randn(1, h * w, 48)
    torch.testing.assert_close(layer(x, grid, pe),
                               official_block(layer, x, pe, h, w, 3),
                               atol=1e-5, rtol=1e-5)
    masked = build(window_attn=True, window_size=3,
                   window_padding='masked').layers[1]
    masked.load_state_dict(layer.state_dict())
    masked.eval()
    same = torch.allclose(masked(x, grid, pe),
                          layer(x, grid, pe), atol=1e-5)
    assert same == (h % 3 == 0 and w % 3 == 0)  # padding makes the change


def test_masked_window_attention_is_a_per_window_layer_run():
    """window_padding='masked': every window, the smaller border ones too,
    is an independent global-attention layer run on its own tokens."""
    torch.manual_seed(0)
    model = build(window_attn=True, window_size=3, window_padding='masked')
    model.init_weights()
    layer = model.layers[0]
    layer.eval()
    plain = PETransformerLayer(48, 3, 96, layer_scale_init_value=1.,
                               norm_cfg=dict(type='LN', eps=1e-6))
    plain.load_state_dict(layer.state_dict())  # same parameter names
    plain.eval()
    grid = (5, 7)
    x, pe = torch.randn(2, 35, 48), torch.randn(1, 35, 48)
    out = layer(x, grid, pe)

    x_map, pe_map = x.view(2, 5, 7, 48), pe.view(1, 5, 7, 48)
    expected = torch.empty_like(x_map)
    for top in range(0, 5, 3):
        for left in range(0, 7, 3):
            rows, cols = slice(top, top + 3), slice(left, left + 3)
            part = x_map[:, rows, cols]
            h, w = part.shape[1:3]
            expected[:, rows, cols] = plain(
                part.reshape(2, h * w, 48), (h, w),
                pe_map[:, rows, cols].reshape(1, h * w, 48)).view(2, h, w, 48)
    torch.testing.assert_close(out, expected.view(2, 35, 48), atol=1e-5,
                               rtol=1e-5)
    # A window covering the grid is global attention.
    whole = build(window_attn=True, window_size=7,
                  window_padding='masked').layers[0]
    whole.load_state_dict(layer.state_dict())
    whole.eval()
    torch.testing.assert_close(whole(x, grid, pe), plain(x, grid, pe),
                               atol=1e-5, rtol=1e-5)


def test_window_attention_draws_drop_path_per_image():
    """The layer runs on the whole image, so each DropPath draws one mask per
    image (ViT-Adapter), not one per window."""
    torch.manual_seed(0)
    model = build(window_attn=True, window_size=3, drop_path_rate=0.75)
    layer = model.layers[2]  # drop probability 0.5
    layer.train()
    seen = []
    for drop in (layer.attn.out_drop, layer.ffn.dropout_layer):
        assert drop.drop_prob == 0.5
        drop.register_forward_hook(
            lambda m, args, out: seen.append((args[0], out)))
    batch = 16
    layer(torch.randn(batch, 35, 48), (5, 7), torch.randn(1, 35, 48))
    for branch, out in seen:
        assert branch.shape[0] == batch  # images, not windows
        dropped = out.flatten(1).eq(0).all(1)
        kept = torch.isclose(out, branch / 0.5).flatten(1).all(1)
        assert bool((dropped ^ kept).all())  # all or nothing per image
        assert 0 < int(dropped.sum()) < batch


def test_window_attention_pattern_runs_on_grids_not_divisible_by_window():
    model = build(window_attn=[True, False] * 2, window_size=[3, None] * 2)
    assert [type(layer.attn).__name__ for layer in model.layers] == [
        'WindowMultiheadAttention', 'MultiheadAttention'] * 2
    outs = model(torch.randn(1, 3, 128, 160))  # grid 8x10: padded windows
    assert outs[2].shape == (1, 48, 8, 10)
    with pytest.raises(ValueError, match='Layer 0 has window attention'):
        build(window_attn=True, window_size=None)
    with pytest.raises(ValueError, match='window_attn lists 3 layers'):
        build(window_attn=[True] * 3)
    with pytest.raises(ValueError, match='window_padding must be one of'):
        build(window_padding='reflect')


# ----------------------------------------------------------- MPVG's Last LN
@pytest.mark.parametrize('method,switch,has_last_norm,has_pe_term', [
    ('mpvg', False, False, False),
    ('pvg', False, False, False),
    ('default', False, False, False),
    ('lape', False, False, False),
    ('mpvg', True, True, True),
    ('pvg', True, True, False),
])
def test_last_ln_switch(method, switch, has_last_norm, has_pe_term):
    model = build(pe_cfg=dict(method=method), vit_last_norm=switch)
    assert (model.ln1 is not None) == has_last_norm
    assert (model.pe.last_pos_norm is not None) == has_pe_term
    if has_pe_term:
        # MPVG's LN''(pos_0) reaches every output level.
        img = torch.randn(1, 3, 64, 64)
        model.eval()
        before = model(img)
        with torch.no_grad():
            model.pe.last_pos_norm.bias.add_(1.0)
        after = model(img)
        assert all(not torch.allclose(a, b) for a, b in zip(before, after))


def test_default_mpvg_adapter_has_pvgs_structure():
    """ViT-Adapter has no Last LN: by default the MPVG and PVG adapters have
    the same modules and differ only in their pre-trained weights."""
    mpvg = DET_MODELS.build(dict(type='ViTAdapter', norm_cfg=BN,
                                 pe_cfg=dict(method='mpvg')))
    pvg = DET_MODELS.build(dict(type='ViTAdapter', norm_cfg=BN,
                                pe_cfg=dict(method='pvg')))
    shapes = {k: v.shape for k, v in pvg.state_dict().items()}
    assert {k: v.shape for k, v in mpvg.state_dict().items()} == shapes


def test_last_ln_needs_the_vit_feature():
    with pytest.raises(ValueError, match='needs add_vit_feature=True'):
        build(vit_last_norm=True, add_vit_feature=False)
    with pytest.raises(ValueError, match='must be True or False'):
        build(vit_last_norm=None)
    model = build(pe_cfg=dict(method='mpvg'), add_vit_feature=False)
    assert model.ln1 is None and model.pe.last_pos_norm is None


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('source', ['last', 'per_interaction'])
def test_every_parameter_gets_a_gradient(method, source):
    """No unused parameters: DDP runs without find_unused_parameters."""
    model = build(pe_cfg=dict(method=method), window_attn=[True, False] * 2,
                  window_size=[3, None] * 2, interaction_indexes=FOUR_BLOCKS,
                  vit_feature_source=source,
                  vit_last_norm=method in ('pvg', 'mpvg'))
    model.init_weights()
    sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 96))) \
        .backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused


def test_checkpointing_gives_the_same_result():
    torch.manual_seed(0)
    options = dict(pe_cfg=dict(method='mpvg'), drop_path_rate=0.0,
                   window_attn=[True, False] * 2, window_size=[3, None] * 2)
    plain = build(**options)
    plain.init_weights()
    ckpt = build(with_cp=True, **options)
    ckpt.load_state_dict(plain.state_dict())
    img = torch.randn(2, 3, 64, 96)
    results = []
    for model in (plain, ckpt):
        outs = model(img)
        sum(o.sum() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in
                               model.named_parameters()}))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], atol=1e-5,
                                   rtol=1e-4)


@pytest.mark.parametrize('source', ['last', 'per_interaction'])
def test_roi_align_reads_the_levels_as_torchvision_does(source):
    """mmcv's RoIAlign (CPU and CUDA) reads its input as contiguous NCHW
    whatever its strides; ViT-Adapter makes its maps contiguous. Our levels
    once came out channels-last and scrambled every RoI feature, so the
    Mask R-CNN demo's RoI head never learned. torchvision's RoIAlign, which
    follows strides, is the reference."""
    from mmcv.ops import roi_align
    from torchvision.ops import roi_align as tv_roi_align
    model = build(interaction_indexes=FOUR_BLOCKS, vit_feature_source=source,
                  window_attn=[True, False] * 2, window_size=[3, None] * 2)
    model.init_weights()
    rois = torch.tensor([[0., 3., 5., 40., 30.], [1., 20., 10., 90., 60.]])
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 96))
    for level, out in enumerate(outs):
        assert out.is_contiguous(), level
        scale = 1 / (4 * 2**level)
        torch.testing.assert_close(
            roi_align(out, rois, (7, 7), scale, 2, 'avg', True),
            tv_roi_align(out, rois, (7, 7), scale, 2, True))


def test_bad_input_is_refused():
    model = build()
    with pytest.raises(ValueError, match='divisible by 32'):
        model(torch.randn(1, 3, 64, 80))
    with pytest.raises(ValueError, match='consecutive'):
        build(interaction_indexes=[[0, 1], [3, 3]])


# ----------------------------------------------------------- checkpoints
def save_classifier(path, method, global_pool='avg'):
    classifier = CLS_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='PEVisionTransformer', arch=SMALL, img_size=64,
                      global_pool=global_pool, pe_cfg=dict(method=method)),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=48)))
    classifier.init_weights()
    torch.save(dict(state_dict=classifier.state_dict(), meta=dict()), path)
    return classifier.state_dict()


def pretrained(path):
    return dict(type='Pretrained', checkpoint=str(path), prefix='backbone.')


@pytest.fixture
def mmengine_log():
    """Messages the current MMLogger receives during the test."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.mark.parametrize('method,last_norm',
                         [(m, False) for m in METHODS] + [('pvg', True),
                                                          ('mpvg', True)])
def test_init_from_mmpretrain_checkpoint(tmp_path, method, last_norm,
                                         mmengine_log):
    global_pool = 'cls' if method in ('default', 'lape') else 'avg'
    path = tmp_path / 'classifier.pth'
    state = save_classifier(path, method, global_pool)
    model = build(pe_cfg=dict(method=method), vit_last_norm=last_norm,
                  init_cfg=pretrained(path))
    level_embed = model.level_embed.clone()
    model.init_weights()
    own = model.state_dict()
    vit_keys = [k for k in own if k.startswith(
        ('patch_embed.', 'pe.', 'pos_embed', 'layers.', 'ln1.'))
        and 'gamma' not in k]
    assert vit_keys and any(k.startswith('ln1.') for k in vit_keys) \
        == last_norm
    for key in vit_keys:
        expected = state['backbone.' + key]
        if key == 'pos_embed' and global_pool == 'cls':
            expected = expected[:, 1:]  # the class token's row is dropped
        torch.testing.assert_close(own[key], expected, msg=key)
    assert not torch.equal(model.level_embed, level_embed)  # adapter init
    # The classifier has no layer scale: the gammas keep their init, 1.0.
    gammas = [k for k in own if k.startswith('layers.') and 'gamma' in k]
    assert len(gammas) == 2 * 4
    assert all(torch.equal(own[k], torch.ones(48)) for k in gammas)
    loaded = [r.getMessage() for r in mmengine_log
              if 'ViTAdapter: loaded' in r.getMessage()]
    assert len(loaded) == 1
    assert '8 layer-scale gammas are not in the checkpoint and keep their ' \
        'init 1.0' in loaded[0]


@pytest.mark.parametrize('global_pool', ['cls', 'avg'])
def test_classifier_of_another_pretraining_size_is_resized(
        tmp_path, global_pool):
    """A classifier pre-trained at 32 px (2x2 grid) into an adapter whose
    ViT was configured for 64 px (4x4): the PE is resized on load."""
    classifier = CLS_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='PEVisionTransformer', arch=SMALL, img_size=32,
                      global_pool=global_pool, pe_cfg=dict(method='lape')),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=48)))
    classifier.init_weights()
    path = tmp_path / 'classifier32.pth'
    torch.save(dict(state_dict=classifier.state_dict()), path)
    model = build(pe_cfg=dict(method='lape'), init_cfg=pretrained(path))

    model.init_weights()

    pos = classifier.backbone.pos_embed.detach()
    grid = pos[:, -4:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 4), mode='bicubic',
                             align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.pos_embed, expected)


def test_adapter_checkpoint_loads_its_gammas(tmp_path):
    torch.manual_seed(0)
    source = build()
    source.init_weights()
    with torch.no_grad():
        for name, param in source.named_parameters():
            if 'gamma' in name:
                param.uniform_(-1, 1)
    path = tmp_path / 'adapter.pth'
    torch.save(dict(state_dict={'backbone.' + k: v for k, v in
                                source.state_dict().items()}), path)
    model = build(init_cfg=pretrained(path))
    model.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)


@pytest.mark.parametrize('saved,config,listed', [
    ('lape', 'pvg', 'pe.layer_norms.0'),
    ('pvg', 'lape', 'pe.layer_norms.0'),
    # With ViT-Adapter's structure the MPVG and PVG adapters are the same
    # modules; the classifier's LN'' (or its absence) tells them apart.
    ('pvg', 'mpvg', "lacks MPVG's Last-LN PE norm"),
    ('mpvg', 'pvg', "has MPVG's Last-LN PE norm"),
    ('default', 'mpvg', 'pe.layer_norms.1.weight'),
])
def test_checkpoint_with_another_pe_method_is_refused(tmp_path, saved,
                                                      config, listed):
    path = tmp_path / 'classifier.pth'
    save_classifier(path, saved)
    model = build(pe_cfg=dict(method=config), init_cfg=pretrained(path))
    with pytest.raises(ValueError) as error:
        model.init_weights()
    message = str(error.value)
    assert listed in message
    assert 'another PE method' in message


def test_mpvg_checkpoint_without_last_ln_drops_it(tmp_path, mmengine_log):
    path = tmp_path / 'classifier.pth'
    save_classifier(path, 'mpvg')
    model = build(pe_cfg=dict(method='mpvg'), init_cfg=pretrained(path))
    model.init_weights()  # ln1.* and pe.last_pos_norm.* are skipped
    message = [r.getMessage() for r in mmengine_log
               if 'ViTAdapter: loaded' in r.getMessage()][0]
    assert "not used with vit_last_norm off: ['ln1.bias', " \
        "'ln1.weight', 'pe.last_pos_norm.bias', " \
        "'pe.last_pos_norm.weight']" in message


def test_init_from_timm_deit_through_the_converter(tmp_path):
    """Official DeiT / timm weights -> tools/model_converters -> adapter."""
    import timm
    from mmmpvg.models.converters import convert_deit_state_dict
    deit = timm.create_model('deit_tiny_patch16_224', pretrained=False)
    state, _ = convert_deit_state_dict(deit.state_dict(),
                                       dict(method='default'), 'cls')
    path = tmp_path / 'deit-tiny_default.pth'
    torch.save(dict(state_dict=state), path)
    model = DET_MODELS.build(dict(type='ViTAdapter', arch='deit-tiny',
                                  norm_cfg=BN, init_cfg=pretrained(path)))
    model.init_weights()
    timm_state = deit.state_dict()
    torch.testing.assert_close(model.layers[5].attn.qkv.weight,
                               timm_state['blocks.5.attn.qkv.weight'])
    torch.testing.assert_close(model.pos_embed,
                               timm_state['pos_embed'][:, 1:])


# ------------------------------------------------- deformable-attn backend
@pytest.mark.parametrize('has_ops,device,asked,runs,level', [
    (False, 'cuda', 'auto', 'pytorch', logging.WARNING),
    (True, 'cuda', 'auto', 'compiled', logging.INFO),
    (True, 'cuda', 'pytorch', 'pytorch', logging.INFO),
    (False, 'cuda', 'pytorch', 'pytorch', logging.INFO),
    (True, 'cpu', 'auto', 'pytorch', logging.INFO),
])
def test_msda_backend_is_logged_once_and_a_cuda_fallback_warns(
        monkeypatch, mmengine_log, has_ops, device, asked, runs, level):
    monkeypatch.setattr(ms_deform_attn, 'mmcv_has_cuda_ops', lambda: has_ops)
    ms_deform_attn._log_backend.cache_clear()
    for _ in range(3):
        assert select_backend(asked, torch.device(device)) == runs
    ms_deform_attn._log_backend.cache_clear()
    records = [r for r in mmengine_log
               if 'deformable attention' in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == level
    message = records[0].getMessage()
    if level == logging.WARNING:
        assert 'falls back to the PyTorch path' in message
        assert 'much slower' in message
    else:
        assert f'runs the {runs} backend on {device}' in message


def test_msda_backend_refuses_what_it_cannot_run(monkeypatch):
    monkeypatch.setattr(ms_deform_attn, 'mmcv_has_cuda_ops', lambda: False)
    with pytest.raises(RuntimeError, match="backend='compiled' needs CUDA"):
        select_backend('compiled', torch.device('cuda'))
    with pytest.raises(ValueError, match='Unknown deformable-attention'):
        select_backend('triton', torch.device('cpu'))


# ------------------------------------------------------- optimizers, configs
def build_from_config(path):
    cfg = Config.fromfile(path)
    cfg.model.backbone.update(norm_cfg=BN, init_cfg=None)
    scope = 'mmdet' if osp.basename(path).startswith('mask-rcnn') \
        else 'mmseg'
    if scope == 'mmseg':
        cfg.model.decode_head.norm_cfg = BN
        cfg.model.auxiliary_head.norm_cfg = BN
    with DefaultScope.overwrite_default_scope(scope):
        registry = DET_MODELS if scope == 'mmdet' else SEG_MODELS
        return registry.build(cfg.model), cfg


def build_wrapper(model, cfg, scope):
    optim_wrapper = dict(cfg.optim_wrapper)
    if optim_wrapper['type'] == 'AmpOptimWrapper':
        # fp16 needs CUDA; the parameter groups do not depend on it.
        optim_wrapper.update(type='OptimWrapper')
        optim_wrapper.pop('loss_scale')
    with DefaultScope.overwrite_default_scope(scope):
        return build_optim_wrapper(model, optim_wrapper)


def test_seg_recipe_is_vit_adapters_layer_decay():
    """ViT-Adapter's LayerDecayOptimizerConstructor: patch embedding and PE
    0.95^13, layer i 0.95^(12 - i), everything else 1; no weight decay on 1-D
    parameters (biases, norms, layer-scale gammas), 0.01 on the rest."""
    model, cfg = build_from_config(SEG_CONFIGS[0])
    wrapper = build_wrapper(model, cfg, 'mmseg')
    groups = {g['param_name']: g for g in wrapper.optimizer.param_groups}
    assert len(groups) == sum(1 for _ in model.parameters())
    lr = 12e-5
    expected_scale = {
        'backbone.patch_embed.projection.weight': 0.95**13,
        'backbone.pos_embed': 0.95**13,
        'backbone.layers.0.attn.qkv.weight': 0.95**12,
        'backbone.layers.0.attn.gamma1.weight': 0.95**12,
        'backbone.layers.11.ffn.layers.1.weight': 0.95**1,
        'backbone.layers.11.ffn.gamma2.weight': 0.95**1,
        'backbone.level_embed': 1.0,
        'backbone.spm.stem.0.conv.weight': 1.0,
        'backbone.interactions.0.injector.attn.value_proj.weight': 1.0,
        'decode_head.conv_seg.weight': 1.0,
    }
    for name, scale in expected_scale.items():
        assert groups[name]['lr'] == pytest.approx(lr * scale), name
    for name, group in groups.items():
        expected_wd = 0.0 if group['params'][0].ndim == 1 else 0.01
        assert group['weight_decay'] == expected_wd, name
    assert groups['backbone.pos_embed']['weight_decay'] == 0.01


def test_seg_recipe_runs_on_cpu_by_changing_only_the_wrapper_type():
    """The fp16 AmpOptimWrapper needs CUDA; CPUAmpOptimWrapper (bfloat16,
    no loss scaling) takes the same settings, loss scale included."""
    import mmmpvg.engine  # noqa: F401  (registers CPUAmpOptimWrapper)
    model, cfg = build_from_config(SEG_CONFIGS[0])
    cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
    with DefaultScope.overwrite_default_scope('mmseg'):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert wrapper.cast_dtype == torch.bfloat16
    assert len(wrapper.optimizer.param_groups) == sum(
        1 for _ in model.parameters())


def official_det_decay(name):
    """ViT-Adapter's detection recipe (mmcv's DefaultOptimizerConstructor):
    custom keys 'level_embed', 'pos_embed', 'norm', 'bias' (by substring of
    the official names) get no decay, everything else 0.05 (norm_decay_mult
    is not set). Our ViT norms ln1/ln2 are its norm1/norm2; its spatial
    prior BatchNorms are stem.1, conv2.1, ... (no 'norm' in the name)."""
    official = name.replace('.ln1.', '.norm1.').replace('.ln2.', '.norm2.')
    if any(key in official for key in ('level_embed', 'pos_embed', 'norm',
                                       'bias')):
        return 0.0
    return 0.05


def test_det_recipe_decays_what_vit_adapters_decays():
    model, cfg = build_from_config(DET_CONFIGS[0])
    wrapper = build_wrapper(model, cfg, 'mmdet')
    decay = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[p] = group['weight_decay']
    for name, p in model.named_parameters():
        assert decay[p] == official_det_decay(name), name
    named = dict(model.named_parameters())
    # The consequences spelled out: gammas and the SPM's BN weights decay.
    assert decay[named['backbone.layers.0.attn.gamma1.weight']] == 0.05
    assert decay[named['backbone.interactions.0.injector.gamma']] == 0.05
    assert decay[named['backbone.spm.stem.0.bn.weight']] == 0.05
    assert decay[named['backbone.spm.stem.0.bn.bias']] == 0.0
    assert decay[named['backbone.layers.0.ln1.weight']] == 0.0
    assert decay[named['backbone.out_norms.0.weight']] == 0.0
    assert decay[named['backbone.pos_embed']] == 0.0
    assert {g['lr'] for g in wrapper.optimizer.param_groups} == {1e-4}


@pytest.mark.parametrize('path', ALL_DET_CONFIGS + ALL_SEG_CONFIGS,
                         ids=osp.basename)
def test_configs_set_the_official_recipe_per_task(path):
    cfg = Config.fromfile(path)
    name = osp.basename(path)
    vit = name.split('_')[1].split('-')
    method, last_ln = (vit[-2], True) if vit[-1] == 'lastln' \
        else (vit[-1], False)
    backbone = cfg.model.backbone
    assert backbone.pe_cfg.method == method
    assert f'deit-tiny_{method}_' in backbone.init_cfg.checkpoint
    assert backbone.init_cfg.prefix == 'backbone.'
    assert backbone.vit_last_norm is last_ln
    assert backbone.layer_scale_init_value == 1.0
    assert '_4xb2-' in name and cfg.train_dataloader.batch_size == 2
    if name.startswith('mask-rcnn'):
        assert backbone.vit_feature_source == 'last'
        assert backbone.window_attn == [True, True, False] * 4
        assert backbone.window_size == [14, 14, None] * 4
        assert backbone.window_padding == 'zeros'
        assert cfg.optim_wrapper.type == 'OptimWrapper'  # fp32
        assert cfg.auto_scale_lr.base_batch_size == 8
    else:
        assert backbone.vit_feature_source == 'per_interaction'
        assert backbone.window_attn is False
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.optim_wrapper.loss_scale == dict(init_scale=512)
    if last_ln:
        assert method in ('mpvg', 'pvg')  # MPVG's Eq. 11 and its control
    assert len(DET_CONFIGS) == len(SEG_CONFIGS) == len(METHODS)
    assert len(LASTLN_CONFIGS) == 4


# Parameter counts of ViT-Adapter-Ti built from the official code with
# DeiT-Ti (ViT-Adapter's tables: 28.1M / 36.1M); its backbone alone (the
# same for both tasks) has 7,966,640, the rest are the mmdet / mmseg heads.
OFFICIAL_COUNT = {'mask-rcnn': 28_068_512, 'upernet': 36_062_428}
OFFICIAL_BACKBONE = 7_966_640
# The official ViT keeps pos_embed (1, 1 + 196, 192) and never uses the class
# token's row; ours stores the 196 patch rows only.
CLS_PE_ROW = 192
LAYER_SCALE = 2 * 12 * 192  # gamma1 + gamma2 in 12 layers: 4,608
PE_NORM = 2 * 192  # one LayerNorm(192)
# PE norms of each method in the adapter's ViT (no class token): LaPE one
# per layer, PVG / MPVG layers 1..11; the Eq. 11 variant adds the Last LN,
# and MPVG its LN''.
PE_NORMS = {'default': 0, 'lape': 12, 'pvg': 11, 'mpvg': 11}


@pytest.mark.parametrize('path', ALL_DET_CONFIGS + ALL_SEG_CONFIGS,
                         ids=osp.basename)
def test_configs_build_the_official_parameter_counts(path):
    """Default: the official count less the unused class-token PE row, i.e.
    28,068,512 - 192 = 28,068,320 (Mask R-CNN) and 36,062,428 - 192 =
    36,062,236 (UperNet). Without layer scale it would be 4,608 fewer
    (28,063,712 / 36,057,628)."""
    name = osp.basename(path)
    task = name.split('_')[0]
    vit = name.split('_')[1].split('-')
    last_ln = vit[-1] == 'lastln'
    method = vit[-2] if last_ln else vit[-1]
    model, _ = build_from_config(path)
    count = sum(p.numel() for p in model.parameters())
    norms = PE_NORMS[method]
    if last_ln:
        norms += 2 if method == 'mpvg' else 1  # Last LN (+ LN'')
    assert count == OFFICIAL_COUNT[task] - CLS_PE_ROW + norms * PE_NORM
    if method == 'default':
        backbone = sum(p.numel() for p in model.backbone.parameters())
        assert backbone == OFFICIAL_BACKBONE - CLS_PE_ROW
        gammas = sum(p.numel() for n, p in model.named_parameters()
                     if n.startswith('backbone.layers.') and 'gamma' in n)
        assert gammas == LAYER_SCALE
        assert count - gammas == {'mask-rcnn': 28_063_712,
                                  'upernet': 36_057_628}[task]
