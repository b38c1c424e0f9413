"""ViTAdapter over the PE-method DeiT: registries, outputs, PE delivery,
window attention, MPVG's Last LN switch, gradients, checkpoints, the
layer-decay constructor and the downstream configs."""
import glob
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS as DET_MODELS
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS as CLS_MODELS
from mmseg.registry import MODELS as SEG_MODELS

from mmmpvg.adapter import ViTAdapter, windowed_layer_forward
from mmmpvg.models import PE_METHODS

pytestmark = pytest.mark.usefixtures('one_thread')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(REPO, 'configs', 'vit_adapter')
DET_CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, 'mask-rcnn_*.py')))
SEG_CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, 'upernet_*.py')))
METHODS = sorted(PE_METHODS)
BN = dict(type='BN', requires_grad=True)
# A small ViT for the tests that do not need DeiT-Ti itself.
SMALL = dict(embed_dims=48, num_layers=4, num_heads=3,
             feedforward_channels=96)
SMALL_ADAPTER = dict(type='ViTAdapter', arch=SMALL, img_size=64,
                     interaction_indexes=[[0, 1], [2, 3]], norm_cfg=BN)



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
    assert [tuple(o.shape) for o in outs] == [(2, 192, 16, 24),
                                             (2, 192, 8, 12),
                                             (2, 192, 4, 6), (2, 192, 2, 3)]


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
            lambda m, args, i=i: received.setdefault(i, args[1]))
    dropout_in = []
    model.drop_after_pos.register_forward_pre_hook(
        lambda m, args: dropout_in.append(args[0]))
    img = torch.randn(1, 3, 96, 128)
    model(img)

    grid = (6, 8)
    stored = model.pe.pos_embed.reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
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


def test_window_attention_is_a_per_window_layer_run():
    model = build()
    model.eval()
    layer = model.layers[0]
    grid, window = (5, 7), 3
    x = torch.randn(2, 35, 48)
    pe = torch.randn(1, 35, 48)
    out = windowed_layer_forward(layer, x, pe, grid, window)

    # Reference: every window (3x3 inside, 2x3 / 3x1 / 2x1 at the border)
    # run through the layer on its own.
    x_map, pe_map = x.view(2, 5, 7, 48), pe.view(1, 5, 7, 48)
    expected = torch.empty_like(x_map)
    for top in range(0, 5, window):
        for left in range(0, 7, window):
            rows, cols = slice(top, top + window), slice(left, left + window)
            part = x_map[:, rows, cols]
            h, w = part.shape[1:3]
            for b in range(2):
                expected[b, rows, cols] = layer(
                    part[b].reshape(1, h * w, 48),
                    pe_map[:, rows, cols].reshape(1, h * w, 48)).view(
                        h, w, 48)
    torch.testing.assert_close(out, expected.view(2, 35, 48), atol=1e-5,
                               rtol=1e-5)
    # A window covering the grid is global attention.
    torch.testing.assert_close(
        windowed_layer_forward(layer, x, pe, grid, 7), layer(x, pe),
        atol=1e-5, rtol=1e-5)


def test_window_attention_pattern_runs_on_grids_not_divisible_by_window():
    model = build(window_attn=[True, False] * 2, window_size=[3, None] * 2)
    outs = model(torch.randn(1, 3, 128, 160))  # grid 8x10: border windows
    assert outs[2].shape == (1, 48, 8, 10)
    with pytest.raises(ValueError, match='Layer 0 has window attention'):
        build(window_attn=True, window_size=None)
    with pytest.raises(ValueError, match='window_attn lists 3 layers'):
        build(window_attn=[True] * 3)


@pytest.mark.parametrize('method,switch,has_last_norm,has_pe_term', [
    ('mpvg', None, True, True),
    ('pvg', None, False, False),
    ('default', None, False, False),
    ('mpvg', False, False, False),
    ('pvg', True, True, False),
])
def test_last_ln_switch(method, switch, has_last_norm, has_pe_term):
    model = build(pe_cfg=dict(method=method), vit_last_norm=switch)
    assert (model.last_norm is not None) == has_last_norm
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


def test_last_ln_needs_the_vit_feature():
    with pytest.raises(ValueError, match='needs add_vit_feature=True'):
        build(vit_last_norm=True, add_vit_feature=False)
    model = build(pe_cfg=dict(method='mpvg'), add_vit_feature=False)
    assert model.last_norm is None and model.pe.last_pos_norm is None


@pytest.mark.parametrize('method', METHODS)
def test_every_parameter_gets_a_gradient(method):
    """No unused parameters: DDP runs without find_unused_parameters."""
    model = build(pe_cfg=dict(method=method), window_attn=[True, False] * 2,
                  window_size=[3, None] * 2)
    model.init_weights()
    sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 96))) \
        .backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused


def test_checkpointing_gives_the_same_result():
    torch.manual_seed(0)
    plain = build(pe_cfg=dict(method='mpvg'), drop_path_rate=0.0)
    plain.init_weights()
    ckpt = build(pe_cfg=dict(method='mpvg'), drop_path_rate=0.0,
                 with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    img = torch.randn(2, 3, 64, 64)
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


@pytest.mark.parametrize('method', METHODS)
def test_init_from_mmpretrain_checkpoint(tmp_path, method):
    global_pool = 'cls' if method in ('default', 'lape') else 'avg'
    path = tmp_path / 'classifier.pth'
    state = save_classifier(path, method, global_pool)
    model = build(pe_cfg=dict(method=method), init_cfg=pretrained(path))
    level_embed = model.level_embed.clone()
    model.init_weights()
    own = model.state_dict()
    vit_keys = [k for k in own if k.startswith(
        ('patch_embed.', 'pe.', 'layers.', 'last_norm.'))]
    assert vit_keys
    for key in vit_keys:
        expected = state['backbone.' + key]
        if key == 'pe.pos_embed' and global_pool == 'cls':
            expected = expected[:, 1:]  # the class token's row is dropped
        torch.testing.assert_close(own[key], expected, msg=key)
    assert not torch.equal(model.level_embed, level_embed)  # adapter init


@pytest.mark.parametrize('saved,config,listed', [
    ('lape', 'pvg', 'pe.layer_norms.0'),
    ('pvg', 'lape', 'pe.layer_norms.0'),
    ('pvg', 'mpvg', 'pe.last_pos_norm.weight'),
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


def test_mpvg_checkpoint_without_last_ln_drops_it(tmp_path):
    path = tmp_path / 'classifier.pth'
    save_classifier(path, 'mpvg')
    model = build(pe_cfg=dict(method='mpvg'), vit_last_norm=False,
                  init_cfg=pretrained(path))
    model.init_weights()  # last_norm.* and pe.last_pos_norm.* are skipped



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
    torch.testing.assert_close(model.pe.pos_embed,
                               timm_state['pos_embed'][:, 1:])


# ------------------------------------------------------- optimizers, configs
def seg_model():
    cfg = Config.fromfile(SEG_CONFIGS[0])
    cfg.model.backbone.update(norm_cfg=BN, init_cfg=None)
    cfg.model.decode_head.norm_cfg = BN
    cfg.model.auxiliary_head.norm_cfg = BN
    with DefaultScope.overwrite_default_scope('mmseg'):
        return SEG_MODELS.build(cfg.model), cfg


def test_seg_layer_decay_asks_the_backbone():
    model, cfg = seg_model()
    with DefaultScope.overwrite_default_scope('mmseg'):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = {g['param_name']: g for g in wrapper.optimizer.param_groups}
    assert len(groups) == sum(1 for _ in model.parameters())
    lr = 12e-5
    expected_scale = {
        'backbone.patch_embed.projection.weight': 0.95**13,
        'backbone.pe.pos_embed': 0.95**13,
        'backbone.layers.0.attn.qkv.weight': 0.95**12,
        'backbone.layers.11.ffn.layers.1.weight': 0.95**1,
        'backbone.level_embed': 1.0,
        'backbone.spm.stem.0.conv.weight': 1.0,
        'backbone.interactions.0.injector.attn.value_proj.weight': 1.0,
        'decode_head.conv_seg.weight': 1.0,
    }
    for name, scale in expected_scale.items():
        assert groups[name]['lr'] == pytest.approx(lr * scale), name
    # No weight decay on 1-D parameters (biases, norms), 0.01 elsewhere.
    for name, group in groups.items():
        expected_wd = 0.0 if group['params'][0].ndim == 1 else 0.01
        assert group['weight_decay'] == expected_wd, name


def test_det_recipe_exempts_embeddings_norms_and_biases_from_decay():
    cfg = Config.fromfile(DET_CONFIGS[0])
    cfg.model.backbone.update(norm_cfg=BN, init_cfg=None)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = DET_MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[p] = group['weight_decay']
    norm_params = {
        p for m in model.modules()
        if isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm))
        for p in m.parameters()
    }
    for name, p in model.named_parameters():
        no_decay = ('level_embed' in name or 'pos_embed' in name
                    or name.endswith('.bias') or p in norm_params)
        assert decay[p] == (0.0 if no_decay else 0.05), name
    assert {g['lr'] for g in wrapper.optimizer.param_groups} == {1e-4}


@pytest.mark.parametrize('path', DET_CONFIGS + SEG_CONFIGS,
                         ids=osp.basename)
def test_one_config_per_pe_method(path):
    cfg = Config.fromfile(path)
    method = osp.basename(path).split('_')[1].split('-')[-1]
    assert cfg.model.backbone.pe_cfg.method == method
    assert f'deit-tiny_{method}_' in cfg.model.backbone.init_cfg.checkpoint
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    assert len(DET_CONFIGS) == len(SEG_CONFIGS) == len(METHODS)


@pytest.mark.parametrize('task,published', [('mask-rcnn', 28.1),
                                            ('upernet', 36.1)])
def test_configs_build_the_published_model_sizes(task, published):
    """ViT-Adapter's tables: ViT-Adapter-T has 28.1M parameters with Mask
    R-CNN and 36.1M with UperNet (Default DeiT-Ti; its layer scale adds
    only 4.6k)."""
    path = next(p for p in DET_CONFIGS + SEG_CONFIGS
                if osp.basename(p).startswith(task) and '-default_' in p)
    cfg = Config.fromfile(path)
    cfg.model.backbone.update(norm_cfg=BN, init_cfg=None)
    scope = 'mmdet' if task == 'mask-rcnn' else 'mmseg'
    registry = DET_MODELS if scope == 'mmdet' else SEG_MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg.model)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(params, 1) == published
