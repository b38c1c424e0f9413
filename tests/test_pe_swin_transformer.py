"""PESwinTransformer: Table 1 counts, timm/mmpretrain equivalence, PE use."""
import os.path as osp

import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.models import SwinTransformer
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401  (registers the backbones)
from mmmpvg.models.converters import (convert_swin_state_dict,
                                      window_relative_position_index)
from model_zoo import assert_parameter_count

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Table 1 (Swin-Ti rows) as exact integers: spec paper-backbones.md §1.
# LaPE prints 28.598 where the paper says 28.599: no structure of Eq. 5-7
# gives 28.599 (its LN set is PVG's), see configs/swin/README.md.
TABLE1_SWIN = {'default': 28_589_410, 'lape': 28_598_242,
               'pvg': 28_598_242, 'mpvg': 28_599_778}
TABLE1_SWIN_PAPER = {'default': 28.589, 'lape': 28.599, 'pvg': 28.598,
                     'mpvg': 28.599}

# 4 stages of (32, 16, 8, 4)^2 tokens at 64 px: windows of 4 shift in
# stages 0-2 and not in stage 3 (grid == window), as Swin-T's 7x7 stage.
TINY = dict(arch=dict(embed_dims=16, depths=[2, 2, 2, 2],
                      num_heads=[1, 2, 2, 4]),
            img_size=64, patch_size=2, window_size=4, drop_path_rate=0.)
TINY_GRIDS = [(32, 32)] * 2 + [(16, 16)] * 2 + [(8, 8)] * 2 + [(4, 4)] * 2
TINY_DIMS = [16] * 2 + [32] * 2 + [64] * 2 + [128] * 2


def build_tiny(**kwargs):
    cfg = dict(type='PESwinTransformer', **TINY)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def randomised(model, seed=0):
    """Random values in every parameter (LN shifts and biases included) so
    that a dropped or swapped tensor cannot go unnoticed."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


def build_from_config(path):
    return MODELS.build(Config.fromfile(path).model)


def config_of(method):
    return osp.join(REPO, f'configs/swin/swin-tiny_{method}_4xb256_in1k.py')


@pytest.mark.parametrize('method', sorted(TABLE1_SWIN))
def test_parameter_counts_match_table1(method):
    assert_parameter_count(
        config_of(method), TABLE1_SWIN_PAPER[method],
        exact=TABLE1_SWIN[method],
        printed=28.598 if method == 'lape' else None)  # paper: 28.599


def test_config_recipe_is_the_official_swin_one():
    """Spec §1.6: the official Swin-T schedule at batch 1024 (4 x 256)."""
    cfg = Config.fromfile(config_of('mpvg'))
    optim = cfg.optim_wrapper
    assert optim.optimizer.type == 'AdamW'
    assert optim.optimizer.lr == pytest.approx(1e-3)
    assert (optim.optimizer.weight_decay, optim.optimizer.eps) == (0.05, 1e-8)
    assert optim.clip_grad.max_norm == 5.0
    assert cfg.train_dataloader.batch_size * 4 == cfg.auto_scale_lr[
        'base_batch_size'] == 1024
    assert cfg.model.backbone.drop_path_rate == 0.2
    assert cfg.model.head.loss.label_smooth_val == 0.1
    warmup, cosine = cfg.param_scheduler
    assert (warmup.end, cosine.begin, cosine.end) == (20, 20, 300)
    assert warmup.start_factor * optim.optimizer.lr == pytest.approx(1e-6)
    assert cosine.eta_min == 1e-5
    assert warmup.convert_to_iter_based and cosine.convert_to_iter_based
    assert cfg.train_cfg.max_epochs == 300


def test_default_with_zeroed_ape_gives_timm_swin_tiny_logits():
    reference = timm.create_model('swin_tiny_patch4_window7_224',
                                  pretrained=False)
    reference = randomised(reference)
    converted, notes = convert_swin_state_dict(reference.state_dict(),
                                               dict(method='default'))
    assert any('absolute_pos_embed' in note for note in notes)
    model = build_from_config(config_of('default')).eval()
    index = model.backbone.stages[0].blocks[0].attn.w_msa \
        .relative_position_index.clone()
    converted['backbone.absolute_pos_embed'] = torch.zeros(1, 3136, 96)
    model.load_state_dict(converted, strict=True)
    # The index written for timm (which does not save it) is mmpretrain's.
    torch.testing.assert_close(
        converted['backbone.stages.0.blocks.0.attn.w_msa.'
                  'relative_position_index'], index)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(images, mode='tensor'),
                                   reference(images), rtol=1e-4, atol=1e-4)


def test_official_checkpoint_layout_converts_like_timm():
    """The official code keeps PatchMerging at the end of stage s and names
    the classifier ``head``; timm moves both."""
    reference = timm.create_model(
        'swin_tiny_patch4_window7_224', pretrained=False, embed_dim=16,
        depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), num_classes=5)
    timm_state = randomised(reference).state_dict()
    official = {}
    for key, value in timm_state.items():
        if '.downsample.' in key:
            stage = int(key.split('.')[1])
            key = key.replace(f'layers.{stage}.', f'layers.{stage - 1}.')
        official[key.replace('head.fc.', 'head.')] = value
    official['layers.0.blocks.0.attn.relative_position_index'] = \
        window_relative_position_index(7)
    from_timm, _ = convert_swin_state_dict(timm_state, None)
    from_official, _ = convert_swin_state_dict(official, None)
    assert from_timm.keys() == from_official.keys()
    for key in from_timm:
        torch.testing.assert_close(from_timm[key], from_official[key])


def test_default_is_mmpretrain_swin_with_absolute_pe():
    """Same state dict, same outputs at every out_index: checkpoints of
    mmpretrain's Swin (use_abs_pos_embed=True) load without renaming."""
    kwargs = dict(TINY, out_indices=(0, 1, 2, 3))
    upstream = SwinTransformer(use_abs_pos_embed=True, **kwargs)
    randomised(upstream)
    upstream.eval()
    ours = build_tiny(out_indices=(0, 1, 2, 3)).eval()
    ours.load_state_dict(upstream.state_dict(), strict=True)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, outs = upstream(images), ours(images)
    assert [o.shape for o in outs] == [
        (2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4)]
    for a, b in zip(outs, expected):
        torch.testing.assert_close(a, b)


def test_old_mmpretrain_swin_checkpoints_are_upgraded_as_upstream():
    """Pre-v2 checkpoints name the last norm ``norm`` and store masks."""
    upstream = SwinTransformer(use_abs_pos_embed=True, **TINY)
    randomised(upstream)
    old = {k.replace('norm3.', 'norm.'): v
           for k, v in upstream.state_dict().items()}
    old['stages.0.blocks.1.attn.attn_mask'] = torch.zeros(4, 16, 16)
    classifier_keys = {'backbone.' + k: v for k, v in old.items()}
    ours = build_tiny()
    ours.load_state_dict(old, strict=True)  # a plain dict: no version
    torch.testing.assert_close(ours.norm3.weight, upstream.norm3.weight)
    wrapped = torch.nn.Module()
    wrapped.backbone = build_tiny()
    wrapped.load_state_dict(classifier_keys, strict=True)
    torch.testing.assert_close(wrapped.backbone.norm3.bias,
                               upstream.norm3.bias)


def reference_forward(model, images, pos0=None):
    """Spec §1.2's pseudo-code, written out with the model's modules."""
    pe = model.pe
    x, hw = model.patch_embed(images)
    pos0 = model.absolute_pos_embed if pos0 is None else pos0
    if pe.add_to_input:
        x = x + pos0
    p, carried0, layer = pos0, pos0, 0
    pos_k = pos0
    for s, stage in enumerate(model.stages):
        for blk in stage.blocks:
            if str(layer) in pe.layer_norms:
                p = pe.layer_norms[str(layer)](
                    p if pe.hierarchical else carried0)
                x = x + blk.attn(blk.norm1(x) + p, hw)
                if layer == pe.last_norm_pos and layer >= 1:  # pos_0 is raw
                    pos_k = p
            else:
                x = x + blk.attn(blk.norm1(x), hw)
            x = blk.ffn(blk.norm2(x), identity=x)
            layer += 1
        if stage.downsample is not None:
            x, hw_next = stage.downsample(x, hw)
            p, _ = stage.downsample(p, hw)
            carried0, _ = stage.downsample(carried0, hw)
            pos_k, _ = stage.downsample(pos_k, hw)
            hw = hw_next
    x = model.norm3(x)
    if pe.last_pos_norm is not None:
        x = x + pe.last_pos_norm(pos_k)
    return x.transpose(1, 2).reshape(x.shape[0], -1, *hw)


@pytest.mark.parametrize('pe_cfg', [
    dict(method='default'), dict(method='lape'), dict(method='pvg'),
    dict(method='mpvg'), dict(method='mpvg', hierarchical=False),
    dict(method='mpvg', include_layer0=False),
    dict(method='mpvg', add_to_input=False),
    dict(method='mpvg', last_norm_pos=3), dict(method='mpvg', last_norm_pos=6),
], ids=str)
def test_forward_matches_the_spec_pseudo_code(pe_cfg):
    model = randomised(build_tiny(pe_cfg=pe_cfg))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        (out, ) = model(images)
        torch.testing.assert_close(out, reference_forward(model, images))


@pytest.mark.parametrize('method,layers', [
    ('default', []), ('lape', list(range(8))), ('pvg', list(range(8))),
    ('mpvg', list(range(8)))])
def test_presets_and_pe_norm_widths(method, layers):
    model = build_tiny(pe_cfg=dict(method=method))
    assert model.pe.layers_with_pe() == layers
    for layer in layers:
        assert model.pe.layer_norms[str(layer)].normalized_shape == \
            (TINY_DIMS[layer], )
    if method == 'mpvg':
        assert model.pe.last_pos_norm.normalized_shape == (128, )
    assert model.pe.add_to_input == (method != 'lape')


def test_pe_reaches_each_block_at_its_shape_before_shift_and_partition():
    model = randomised(build_tiny(pe_cfg=dict(method='pvg')))
    seen = {}

    def on_block(index):
        def hook(module, args):
            x, hw, pe = args
            seen[index] = dict(x=x, hw=hw, pe=pe)
        return hook

    def on_attn(index):
        def hook(module, args):
            seen[index]['attn_in'] = args[0]
        return hook

    def on_windows(index):
        def hook(module, args, kwargs):
            seen[index]['windows'] = args[0]
        return hook

    for i, block in enumerate(model.pe_blocks()):
        block.register_forward_pre_hook(on_block(i))
        block.attn.register_forward_pre_hook(on_attn(i))
        block.attn.w_msa.register_forward_pre_hook(on_windows(i),
                                                   with_kwargs=True)
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
        for i, block in enumerate(model.pe_blocks()):
            got = seen[i]
            (h, w), dims = TINY_GRIDS[i], TINY_DIMS[i]
            assert tuple(got['hw']) == (h, w)
            assert got['pe'].shape == (1, h * w, dims)
            # The PE is added to norm1(x), in token order...
            expected = block.norm1(got['x']) + got['pe']
            torch.testing.assert_close(got['attn_in'], expected)
            # ...then shifted and windowed together with its tokens.
            shift = block.attn.shift_size if min(h, w) > 4 else 0
            assert shift == (2 if i % 2 and i < 6 else 0)
            grid = torch.roll(expected.view(2, h, w, dims),
                              (-shift, -shift), (1, 2))
            windows = grid.view(2, h // 4, 4, w // 4, 4, dims).permute(
                0, 1, 3, 2, 4, 5).reshape(-1, 16, dims)
            torch.testing.assert_close(got['windows'], windows)


def test_other_input_sizes_resize_pos0_before_the_chain():
    model = randomised(build_tiny(pe_cfg=dict(method='mpvg')))
    images = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        (out, ) = model(images)
        assert out.shape == (1, 128, 6, 4)
        pos0 = F.interpolate(
            model.absolute_pos_embed.reshape(1, 32, 32, 16).permute(
                0, 3, 1, 2),
            size=(48, 32), mode='bicubic', align_corners=False)
        pos0 = pos0.flatten(2).transpose(1, 2)
        torch.testing.assert_close(out, reference_forward(model, images,
                                                          pos0))


@pytest.mark.parametrize('kwargs,error,message', [
    (dict(use_abs_pos_embed=False), ValueError, 'use_abs_pos_embed=True'),
    (dict(pe_cfg=dict(method='mpvg'), out_indices=(2, )), ValueError,
     'does not output stage 3'),
    (dict(pe_cfg=dict(method='mpvg', last_norm_pos=8)), ValueError,
     'last_norm_pos=8'),
    (dict(global_pool='cls'), TypeError, 'global_pool'),
])
def test_meaningless_options_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        build_tiny(**kwargs)


def test_layer_depths_for_layer_decay():
    model = build_tiny(pe_cfg=dict(method='mpvg'))
    depth = model.get_layer_depth
    p = 'backbone.'
    assert depth(p + 'absolute_pos_embed', p) == (0, 10)
    assert depth(p + 'patch_embed.projection.weight', p) == (0, 10)
    assert depth(p + 'pe.layer_norms.0.weight', p) == (1, 10)
    assert depth(p + 'stages.0.blocks.0.norm1.weight', p) == (1, 10)
    assert depth(p + 'pe.layer_norms.5.bias', p) == (6, 10)
    assert depth(p + 'stages.2.blocks.1.attn.w_msa.qkv.weight', p) == (6, 10)
    assert depth(p + 'stages.1.downsample.reduction.weight', p) == (4, 10)
    assert depth(p + 'pe.last_pos_norm.weight', p) == (9, 10)
    assert depth(p + 'norm3.weight', p) == (9, 10)
    assert depth('head.fc.weight', p) == (9, 10)
    # Every parameter gets a depth the decay constructor can use.
    for name, _ in model.named_parameters():
        assert 0 <= depth(p + name, p)[0] < 10


def test_frozen_stages_freeze_their_pe_too():
    model = build_tiny(pe_cfg=dict(method='mpvg'), frozen_stages=1)
    model.train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert 'absolute_pos_embed' in frozen
    assert {n for n in frozen if n.startswith('pe.')} == {
        f'pe.layer_norms.{layer}.{w}' for layer in range(4)
        for w in ('weight', 'bias')}
    assert all(n.startswith(('patch_embed.', 'stages.0.', 'stages.1.',
                             'absolute_pos_embed', 'pe.'))
               for n in frozen)


def test_mmdet_builds_it_as_a_multi_scale_backbone():
    """Dense prediction: mmdet/mmseg configs name it by scope, the maps of
    every stage come out, inputs of any size (padded windows) work."""
    from mmdet.registry import MODELS as MMDET_MODELS
    backbone = MMDET_MODELS.build(dict(
        type='mmpretrain.PESwinTransformer', out_indices=(0, 1, 2, 3),
        pad_small_map=True, pe_cfg=dict(method='mpvg'), **TINY))
    backbone.eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 72, 90))
    assert [tuple(o.shape) for o in outs] == [
        (1, 16, 36, 45), (1, 32, 18, 23), (1, 64, 9, 12), (1, 128, 5, 6)]


def optimizer_groups(model, optim_wrapper_cfg):
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        wrapper = build_optim_wrapper(model, optim_wrapper_cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: group for group in wrapper.optimizer.param_groups
            for p in group['params']}


def tiny_classifier(method):
    cfg = Config.fromfile(config_of(method))
    cfg.model.backbone.update(TINY)
    cfg.model.head.update(num_classes=5, in_channels=128)
    cfg.model.train_cfg = None
    return cfg, MODELS.build(cfg.model)


def test_no_weight_decay_on_1d_params_the_pe_and_the_relative_bias():
    cfg, model = tiny_classifier('mpvg')
    groups = optimizer_groups(model, cfg.optim_wrapper)
    assert len(groups) == len(list(model.parameters()))
    for name, group in groups.items():
        param = model.get_parameter(name)
        no_decay = param.dim() == 1 or name.endswith(
            ('absolute_pos_embed', 'relative_position_bias_table'))
        assert group['weight_decay'] == (0 if no_decay else 0.05), name
    assert groups['backbone.pe.layer_norms.0.weight']['weight_decay'] == 0
    assert groups['backbone.pe.last_pos_norm.bias']['weight_decay'] == 0


def test_layer_wise_lr_decay_puts_pe_norms_with_their_blocks():
    cfg, model = tiny_classifier('mpvg')
    optim = cfg.optim_wrapper
    optim.constructor = 'LearningRateDecayOptimWrapperConstructor'
    optim.paramwise_cfg.layer_decay_rate = 0.5
    groups = optimizer_groups(model, optim)
    scale = {name: g['lr_scale'] for name, g in groups.items()}
    b = 'backbone.'
    assert scale[b + 'absolute_pos_embed'] == scale[
        b + 'patch_embed.projection.weight'] == 0.5 ** 9
    for layer, (s, k) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1),
                                    (2, 0), (2, 1), (3, 0), (3, 1)]):
        block = scale[f'{b}stages.{s}.blocks.{k}.norm1.weight']
        assert block == 0.5 ** (8 - layer)
        assert scale[f'{b}pe.layer_norms.{layer}.weight'] == block
    assert scale[b + 'pe.last_pos_norm.weight'] == scale[
        'head.fc.weight'] == 1.0


@pytest.mark.slow
def test_converter_script_writes_a_checkpoint_the_mpvg_model_loads(tmp_path):
    import subprocess
    import sys
    reference = timm.create_model(
        'swin_tiny_patch4_window7_224', pretrained=False, embed_dim=16,
        depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4,
        patch_size=2, img_size=64, num_classes=5)
    src = tmp_path / 'timm_swin.pth'
    torch.save({'model': randomised(reference).state_dict()}, src)
    dst = tmp_path / 'mpvg.pth'
    result = subprocess.run(
        [sys.executable, 'tools/model_converters/swin_to_mmmpvg.py',
         str(src), str(dst), '--pe-method', 'mpvg'],
        cwd=REPO, capture_output=True, text=True, check=True)
    assert 'PE norms of layers 0..7 are new' in result.stdout
    assert 'absolute_pos_embed is not in the checkpoint' in result.stdout
    converted = torch.load(dst, weights_only=True)['state_dict']
    _, model = tiny_classifier('mpvg')
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert unexpected == []
    assert sorted(missing) == sorted(
        ['backbone.absolute_pos_embed'] +
        [f'backbone.pe.layer_norms.{i}.{w}' for i in range(8)
         for w in ('weight', 'bias')] +
        [f'backbone.pe.last_pos_norm.{w}' for w in ('weight', 'bias')])
