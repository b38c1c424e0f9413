"""PEVisionTransformer: presets, paper parameter counts, PE wiring."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401  (registers the backbone)
from mmmpvg.models import PE_METHODS
from model_zoo import assert_parameter_count, folder_configs

DEIT_CONFIGS = folder_configs('deit')

# Table 1 (DeiT rows), #Params in M truncated to 3 decimals.
TABLE1 = {
    ('tiny', 'default'): 5.717, ('tiny', 'lape'): 5.721,
    ('tiny', 'pvg'): 5.721, ('tiny', 'mpvg'): 5.721,
    ('small', 'default'): 22.050, ('small', 'lape'): 22.059,
    ('small', 'pvg'): 22.058, ('small', 'mpvg'): 22.059,
    ('base', 'default'): 86.567, ('base', 'lape'): 86.586,
    ('base', 'pvg'): 86.583, ('base', 'mpvg'): 86.584,
}
# LaPE-Ti: the official LaPE structure (class token, one PE LayerNorm in
# each of the 12 layers) matches Table 1 for DeiT-S and DeiT-B but gives
# 5,722,024 for DeiT-Ti, 24 parameters above the printed 5.721; no other
# structure fits all three rows.
LAPE_TINY_EXACT = 5_722_024

TINY = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)


def build_backbone(**kwargs):
    cfg = dict(type='PEVisionTransformer', arch=TINY, img_size=32,
               patch_size=8)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def build_from_config(path):
    cfg = Config.fromfile(path)
    return MODELS.build(cfg.model)


# DeiT-S/B configs build in the #Params test; running all three sizes
# here would only repeat the same code path at a higher cost.
@pytest.mark.parametrize(
    'path', [p for p in DEIT_CONFIGS
             if osp.basename(p).startswith('deit-tiny')],  # and ablations
    ids=osp.basename)
def test_every_tiny_config_builds_and_runs_through_mmpretrain(path):
    model = build_from_config(path)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224), mode='tensor')
    assert logits.shape == (1, 1000)


@pytest.mark.parametrize('arch,method', sorted(TABLE1))
def test_parameter_counts_match_table1(arch, method):
    path = [p for p in DEIT_CONFIGS
            if osp.basename(p).startswith(f'deit-{arch}_{method}_')]
    assert len(path) == 1, path
    if (arch, method) == ('tiny', 'lape'):  # paper: 5.721
        assert_parameter_count(path[0], TABLE1[arch, method],
                               exact=LAPE_TINY_EXACT, printed=5.722)
    else:
        assert_parameter_count(path[0], TABLE1[arch, method])


@pytest.mark.parametrize('method', sorted(PE_METHODS))
@pytest.mark.parametrize('size', [32, 48])
def test_forward_shapes(method, size):
    pool = 'cls' if method in ('default', 'lape') else 'avg'
    model = build_backbone(global_pool=pool, pe_cfg=dict(method=method))
    (pooled, ) = model(torch.randn(2, 3, size, size))
    assert pooled.shape == (2, 32)
    model.out_type = 'featmap'
    (featmap, ) = model(torch.randn(2, 3, size, size))
    assert featmap.shape == (2, 32, size // 8, size // 8)
    # mmcv's RoIAlign and other raw-pointer ops ignore strides.
    assert featmap.is_contiguous()


def capture_layer_inputs(model, images):
    seen = {}

    def hook(index):
        def record(module, args, kwargs):
            x, _, pe = (list(args) + [kwargs.get('pe')])[:3]
            seen[index] = (x.detach().clone(),
                           None if pe is None else pe.detach().clone())
        return record

    handles = [layer.register_forward_pre_hook(hook(i), with_kwargs=True)
               for i, layer in enumerate(model.layers)]
    model(images)
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize('method', ['pvg', 'mpvg'])
def test_pvg_feeds_hierarchical_pe_from_layer1(method):
    torch.manual_seed(0)
    model = build_backbone(global_pool='avg', pe_cfg=dict(method=method))
    for norm in model.pe.layer_norms.values():  # make every LN distinct
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    images = torch.randn(2, 3, 32, 32)
    seen = capture_layer_inputs(model, images)

    pos = model.pos_embed
    tokens, _ = model.embed(images)
    assert seen[0][1] is None, 'layer 0 must get no PE'
    torch.testing.assert_close(seen[0][0], tokens + pos)  # Eq. 8: x + PE
    expected = pos
    for layer in range(1, 4):  # Eq. 9-10: LN'_l(pos_{l-1})
        expected = model.pe.layer_norms[str(layer)](expected)
        torch.testing.assert_close(seen[layer][1], expected.detach())


def test_lape_feeds_every_layer_and_not_the_input():
    model = build_backbone(global_pool='cls', pe_cfg=dict(method='lape'))
    images = torch.randn(1, 3, 32, 32)
    seen = capture_layer_inputs(model, images)
    tokens, _ = model.embed(images)
    torch.testing.assert_close(seen[0][0], tokens)  # Eq. 5: no PE added
    expected = model.pos_embed
    for layer in range(4):  # Eq. 6-7
        expected = model.pe.layer_norms[str(layer)](expected)
        torch.testing.assert_close(seen[layer][1], expected.detach())


def test_non_hierarchical_uses_pos0_in_every_layer():
    model = build_backbone(pe_cfg=dict(method='mpvg', hierarchical=False))
    seen = capture_layer_inputs(model, torch.randn(1, 3, 32, 32))
    for layer in range(1, 4):
        expected = model.pe.layer_norms[str(layer)](model.pos_embed)
        torch.testing.assert_close(seen[layer][1], expected.detach())


@pytest.mark.parametrize('k', [0, 2])
def test_mpvg_last_norm_adds_ln_of_pos_k(k):
    model = build_backbone(pe_cfg=dict(method='mpvg', last_norm_pos=k))
    model.out_type = 'featmap'
    torch.nn.init.normal_(model.pe.last_pos_norm.bias)
    images = torch.randn(2, 3, 32, 32)
    seen = {}
    model.ln1.register_forward_hook(
        lambda m, i, o: seen.setdefault('last_ln', o.detach()))
    (featmap, ) = model(images)
    pos_k = model.pos_embed if k == 0 else capture_layer_inputs(
        model, images)[k][1]
    expected = seen['last_ln'] + model.pe.last_pos_norm(pos_k)  # Eq. 11
    torch.testing.assert_close(
        featmap.flatten(2).transpose(1, 2), expected.detach())


def test_pe_interpolated_before_the_ln_chain():
    model = build_backbone(pe_cfg=dict(method='pvg'))
    from mmpretrain.models.utils import resize_pos_embed
    seen = capture_layer_inputs(model, torch.randn(1, 3, 48, 64))
    resized = resize_pos_embed(model.pos_embed, (4, 4), (6, 8),
                               mode='bicubic', num_extra_tokens=0)
    expected = model.pe.layer_norms['1'](resized)
    torch.testing.assert_close(seen[1][1], expected.detach())


@pytest.mark.parametrize('pe_cfg,pool,message', [
    (dict(method='mpvg'), 'cls', 'class token'),
    (dict(method='mpvg', last_norm_pos=7), 'avg', 'last_norm_pos=7'),
])
def test_the_backbone_checks_knobs_against_its_pooling_and_depth(
        pe_cfg, pool, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(global_pool=pool, pe_cfg=pe_cfg)


def test_pos_embed_init_std_sets_the_pe_scale():
    """DeiT's 0.02 by default; the digits demo's 1.0 (truncated at +-2 as
    timm/mmengine do: a std of 0.880 for a unit normal)."""
    torch.manual_seed(0)
    deit = build_backbone(pe_cfg=dict(method='pvg'))
    deit.init_weights()
    torch.manual_seed(0)
    unit = build_backbone(pe_cfg=dict(method='pvg'), pos_embed_init_std=1.0)
    unit.init_weights()
    assert abs(deit.pos_embed.std().item() - 0.02) < 0.002
    assert abs(unit.pos_embed.std().item() - 0.880) < 0.1
    assert unit.pos_embed.abs().max().item() <= 2.0


def test_image_size_not_divisible_by_patch_is_refused():
    model = build_backbone()
    with pytest.raises(ValueError, match='not divisible by the patch size'):
        model(torch.randn(1, 3, 36, 32))


def test_mmpretrain_deit_checkpoint_loads_with_a_plain_pretrained_init(
        tmp_path):
    """The Default model has mmpretrain's VisionTransformer names: its DeiT
    checkpoints load through ``Pretrained`` alone, every tensor kept."""
    deit = MODELS.build(dict(
        type='VisionTransformer', arch=TINY, img_size=32, patch_size=8,
        out_type='cls_token', init_cfg=None))
    with torch.no_grad():
        for param in deit.parameters():
            param.normal_()
    path = str(tmp_path / 'mmpretrain_deit.pth')
    torch.save(dict(state_dict={f'backbone.{k}': v
                                for k, v in deit.state_dict().items()}),
               path)
    model = build_backbone(global_pool='cls', init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    assert model.state_dict().keys() == deit.state_dict().keys()
    for key, value in deit.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    images = torch.randn(2, 3, 32, 32)
    deit.eval()  # mmpretrain's returns None
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images)[0], deit(images)[0])
