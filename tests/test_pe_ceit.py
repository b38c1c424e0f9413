"""PECeiT: Table 1 CeiT-Ti counts, the official forward through the
converter, where the PE enters, Eq. 11 after pooling, configs."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.runner import Runner

from mmmpvg.models.converters import convert_ceit_state_dict
from model_zoo import REPO, assert_parameter_count
from pe_families import (METHODS, NUM_CLASSES, TINY_BACKBONES, arch_sizes,
                         backbone_cfg, build, classifier, images)
from pe_reference import (RandomState, assert_converted_logits,
                          assert_converter_script_output_loads,
                          assert_pe_at_attention, attention,
                          hook_attention_inputs, method_rules, official_tokens,
                          pe_chain, tiny_optimizer_groups, with_pe)

# CeiT-Ti with a 1000-class head, counted by hand to the paper's #Params:
#   I2T conv 3*64*49 + BN 2*64                                =     9,536
#   patch projection 64*192*16 + 192                          =   196,800
#   cls_token 192 + pos_embed 197*192                         =    38,016
#   one layer: LN 384 + qkv 192*576+576 + proj 192*192+192
#     + LN 384 + LeFF (1x1 192*768+768, BN 1,536, depth-wise 768*9+768,
#     BN 1,536, 1x1 768*192+192, BN 384 = 307,008)           =   456,000
#   12 layers                                                 = 5,472,000
#   LCA: 2 LN 768 + qkv 111,168 + proj 37,056 + MLP 295,872   =   444,864
#   pos_layer_embed 12*192 + final LN 384 + head 192*1000+1000 =  195,688
#   Default                                                   = 6,356,904
#   LaPE = Default + 12 PE LNs * 384                          = 6,361,512
#   PVG  = Default - cls 192 - its PE row 192 + 12 * 384      = 6,361,128
#   MPVG = PVG + LN'' 384                                     = 6,361,512
TABLE1_CEIT = dict(default=6_356_904, lape=6_361_512, pvg=6_361_128,
                   mpvg=6_361_512)
TABLE1_CEIT_PAPER = dict(default=6.356, lape=6.361, pvg=6.361, mpvg=6.361)

# The tiny CeiT of pe_families, as the official code would hold it.
TINY = TINY_BACKBONES['ceit']
DIMS, DEPTH, HEADS, HIDDEN = arch_sizes('ceit')
STEM = TINY['stem_channels']
GRID = 4  # 64 px -> 16 I2T features -> 4x4 patches of 4
EPS = 1e-6


def official_state_dict(seed=0):
    """Random weights with the official ``ceit_model.py`` names/shapes."""
    weights = RandomState(seed)
    weights.linear('i2t.backbone.conv', STEM, 3, 7, 7, bias=False)
    weights.batch_norm('i2t.backbone.bn', STEM)
    weights.linear('i2t.proj', DIMS, STEM, 4, 4)
    weights.state['cls_token'] = weights.rand(1, 1, DIMS)
    weights.state['pos_embed'] = weights.rand(1, GRID * GRID + 1, DIMS)
    for i in range(DEPTH):
        b = f'blocks.{i}'
        weights.norm(b + '.norm1', DIMS)
        weights.linear(b + '.attn.qkv', 3 * DIMS, DIMS)
        weights.linear(b + '.attn.proj', DIMS, DIMS)
        weights.norm(b + '.norm2', DIMS)
        weights.linear(b + '.leff.conv1', HIDDEN, DIMS, 1, 1)
        weights.batch_norm(b + '.leff.bn1', HIDDEN)
        weights.linear(b + '.leff.conv2', HIDDEN, 1, 3, 3)
        weights.batch_norm(b + '.leff.bn2', HIDDEN)
        weights.linear(b + '.leff.conv3', DIMS, HIDDEN, 1, 1)
        weights.batch_norm(b + '.leff.bn3', DIMS)
    weights.norm('lca.norm1', DIMS)
    weights.linear('lca.attn.qkv', 3 * DIMS, DIMS)
    weights.linear('lca.attn.proj', DIMS, DIMS)
    weights.norm('lca.norm2', DIMS)
    weights.linear('lca.feedforward.fc1', HIDDEN, DIMS)
    weights.linear('lca.feedforward.fc2', DIMS, HIDDEN)
    weights.state['pos_layer_embed'] = weights.rand(1, DEPTH, DIMS)
    weights.norm('norm', DIMS)
    weights.linear('head', NUM_CLASSES, DIMS)
    return weights.state


def reference_logits(sd, images, rules, pe_norms, last_norm):
    """The official CeiT forward (eval mode), written out, with the
    paper's PE rules: ``rules['cls']`` False is the project's PVG/MPVG
    reading (no class token, LCA over per-layer token means)."""
    def bn(x, p):
        return F.batch_norm(x, sd[p + '.running_mean'],
                            sd[p + '.running_var'], sd[p + '.weight'],
                            sd[p + '.bias'], False, 0., 1e-5)

    def ln(x, p):
        return F.layer_norm(x, (DIMS, ), sd[p + '.weight'], sd[p + '.bias'],
                            EPS)

    x = F.conv2d(images, sd['i2t.backbone.conv.weight'], stride=2,
                 padding=3)
    x = F.max_pool2d(bn(x, 'i2t.backbone.bn'), 3, 2, 1)
    x = F.conv2d(x, sd['i2t.proj.weight'], sd['i2t.proj.bias'], stride=4)
    x, pos = official_tokens(x.flatten(2).transpose(1, 2), sd['cls_token'],
                             sd['pos_embed'], rules)
    chain = pe_chain(pos, pe_norms, DEPTH, EPS)
    extra = 1 if rules['cls'] else 0
    per_layer = []
    for i in range(DEPTH):
        b = f'blocks.{i}.'
        attn_in = with_pe(ln(x, b + 'norm1'), chain[i])
        x = x + attention(attn_in, sd[b + 'attn.qkv.weight'],
                          sd[b + 'attn.qkv.bias'], sd[b + 'attn.proj.weight'],
                          sd[b + 'attn.proj.bias'], HEADS)
        y = ln(x, b + 'norm2')
        grid = y[:, extra:].transpose(1, 2).reshape(len(x), DIMS, GRID, GRID)
        grid = F.gelu(bn(F.conv2d(grid, sd[b + 'leff.conv1.weight'],
                                  sd[b + 'leff.conv1.bias']), b + 'leff.bn1'))
        grid = F.gelu(bn(F.conv2d(grid, sd[b + 'leff.conv2.weight'],
                                  sd[b + 'leff.conv2.bias'], padding=1,
                                  groups=HIDDEN), b + 'leff.bn2'))
        grid = bn(F.conv2d(grid, sd[b + 'leff.conv3.weight'],
                           sd[b + 'leff.conv3.bias']), b + 'leff.bn3')
        x = x + torch.cat([y[:, :extra], grid.flatten(2).transpose(1, 2)], 1)
        per_layer.append(x[:, 0] if rules['cls'] else x.mean(1))
    tokens = torch.stack(per_layer, 1) + sd['pos_layer_embed']
    z = tokens[:, -1:] + attention(
        ln(tokens, 'lca.norm1'), sd['lca.attn.qkv.weight'],
        sd['lca.attn.qkv.bias'], sd['lca.attn.proj.weight'],
        sd['lca.attn.proj.bias'], HEADS, query_rows=[-1])
    hidden = F.gelu(F.linear(ln(z, 'lca.norm2'),
                             sd['lca.feedforward.fc1.weight'],
                             sd['lca.feedforward.fc1.bias']))
    z = z + F.linear(hidden, sd['lca.feedforward.fc2.weight'],
                     sd['lca.feedforward.fc2.bias'])
    z = ln(z, 'norm')[:, 0]
    if last_norm is not None:  # Eq. 11, pooled like the tokens
        z = z + F.layer_norm(pos, (DIMS, ), *last_norm, EPS).mean(1)
    return F.linear(z, sd['head.weight'], sd['head.bias'])


def config_of(method):
    return osp.join(REPO, f'configs/ceit/ceit-tiny_{method}_4xb256_in1k.py')


@pytest.mark.parametrize('method', sorted(TABLE1_CEIT))
def test_parameter_counts_match_table1(method):
    assert_parameter_count(config_of(method), TABLE1_CEIT_PAPER[method],
                           exact=TABLE1_CEIT[method])


def test_config_recipe_is_the_official_ceit_one():
    """Spec §2.3: CeiT's main.py defaults at batch 1024 (4 x 256)."""
    cfg = Config.fromfile(config_of('mpvg'))
    optim = cfg.optim_wrapper
    assert optim.optimizer.type == 'AdamW'
    assert optim.optimizer.lr == pytest.approx(5e-4 * 1024 / 512)
    assert optim.optimizer.weight_decay == 0.05
    assert optim.clip_grad is None
    assert cfg.train_dataloader.batch_size * 4 == cfg.auto_scale_lr[
        'base_batch_size'] == 1024
    assert cfg.train_dataloader.sampler.type == 'RepeatAugSampler'
    assert [h.type for h in cfg.custom_hooks] == ['EMAHook']
    assert 1 - cfg.custom_hooks[0].momentum == pytest.approx(0.99996)
    assert cfg.model.backbone.drop_path_rate == 0.1
    assert cfg.model.head.loss.label_smooth_val == 0.1
    assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup',
                                                              'CutMix']
    warmup, cosine = cfg.param_scheduler
    assert (warmup.end, cosine.begin, cosine.end) == (5, 5, 300)
    assert warmup.start_factor * optim.optimizer.lr == pytest.approx(1e-6)
    assert cosine.eta_min == 1e-5
    assert cfg.train_cfg.max_epochs == 300


@pytest.mark.parametrize('method', METHODS)
def test_forward_equals_the_official_forward_through_the_converter(method):
    rules = method_rules(method, DEPTH, pe_in_layer0=True)
    notes = assert_converted_logits(
        classifier('ceit', method), convert_ceit_state_dict,
        official_state_dict(), rules, images('ceit'), reference_logits)
    if not rules['cls']:
        assert any('dropped cls_token' in note for note in notes)


@pytest.mark.parametrize('method', METHODS)
def test_pe_enters_each_layer_at_the_attention_input(method):
    """Hooks: x_0 gets pos_0 only when the method adds it; layer l's
    attention sees ``ln1(x_l) + pe_l`` with pe_l the LN chain on pos_0
    (PVG/MPVG: layers 0..L-1, the CeiT decision); LeFF sees ``ln2(x)``
    untouched; the LCA sees the per-layer class tokens (Default, LaPE) or
    token means (PVG, MPVG) plus ``pos_layer_embed``."""
    rules = method_rules(method, DEPTH, pe_in_layer0=True)
    backbone = classifier('ceit', method).backbone
    seen = hook_attention_inputs(backbone)
    for i, layer in enumerate(backbone.layers):
        layer.register_forward_hook(seen.output(f'out{i}'))
        layer.ln2.register_forward_hook(seen.output(f'ln2_{i}'))
        layer.leff.register_forward_pre_hook(seen.input(f'leff{i}'))
    backbone.lca.register_forward_pre_hook(seen.input('lca'))
    with torch.no_grad():
        backbone(images('ceit'))
        assert_pe_at_attention(seen, backbone, rules, EPS)
        pooled = []
        for i in range(DEPTH):
            torch.testing.assert_close(seen[f'leff{i}'], seen[f'ln2_{i}'])
            out = seen[f'out{i}']
            pooled.append(out[:, 0] if rules['cls'] else out.mean(1))
        torch.testing.assert_close(
            seen['lca'], torch.stack(pooled, 1) + backbone.pos_layer_embed)


def test_other_input_sizes_resize_the_pe_and_bad_sizes_are_refused():
    backbone = classifier('ceit', 'mpvg').backbone.eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 96, 64))[0].shape == (1, DIMS)
    with pytest.raises(ValueError, match='multiple of 16'):
        backbone(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match='global average pooling'):
        build(backbone_cfg('ceit', 'mpvg', cls_token=True))


@pytest.mark.slow
def test_converter_script_writes_a_checkpoint_the_mpvg_model_loads(tmp_path):
    rules = method_rules('mpvg', DEPTH, pe_in_layer0=True)
    assert rules['layers'] == list(range(DEPTH))
    assert_converter_script_output_loads(
        'ceit_to_mmmpvg.py', official_state_dict(), tmp_path,
        classifier('ceit', 'mpvg'), 'mpvg', rules)


@pytest.mark.slow
@pytest.mark.usefixtures('one_thread')
def test_imagenet_config_runs_its_recipe_for_two_iterations(tmp_path):
    """The shipped MPVG config (full CeiT-Ti at 224, RandAugment, erasing,
    Mixup/CutMix, RepeatAugSampler, EMA) on an 8-image folder data set."""
    rng = np.random.default_rng(0)
    for index in range(8):
        mmcv.imwrite(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8),
                     str(tmp_path / 'data' / f'c{index % 2}' / f'{index}.png'))
    cfg = Config.fromfile(config_of('mpvg'))
    cfg.train_dataloader.update(batch_size=4, num_workers=0,
                                persistent_workers=False)
    cfg.train_dataloader.dataset = dict(
        type='CustomDataset', data_root=str(tmp_path / 'data'),
        pipeline=cfg.train_dataloader.dataset.pipeline)
    for key in ('val_dataloader', 'val_evaluator', 'val_cfg',
                'test_dataloader', 'test_evaluator', 'test_cfg'):
        cfg[key] = None
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.default_hooks.logger.interval = 1
    cfg.experiment_name = 'ceit-recipe'
    runner = Runner.from_cfg(cfg)
    before = runner.model.backbone.pe.last_pos_norm.weight.clone()
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert not torch.equal(before,
                           runner.model.backbone.pe.last_pos_norm.weight)
    assert osp.exists(tmp_path / 'work' / 'epoch_1.pth')


@pytest.mark.parametrize('method', ['lape', 'mpvg'])
def test_weight_decay_groups_are_timms_with_no_weight_decay(method):
    """timm's optimizer factory with CeiT's no_weight_decay(): no decay on
    1-D parameters (LN, BN, biases, so every PE LN), pos_embed and
    cls_token; pos_layer_embed is decayed."""
    model, groups = tiny_optimizer_groups(config_of(method), TINY,
                                          NUM_CLASSES)
    assert len(groups) == len(list(model.parameters()))
    for name, group in groups.items():
        no_decay = model.get_parameter(name).dim() == 1 or name.endswith(
            ('cls_token', 'pos_embed'))
        assert group['weight_decay'] == (0 if no_decay else 0.05), name
    assert groups['backbone.pos_layer_embed']['weight_decay'] == 0.05
    assert groups['backbone.pe.layer_norms.1.weight']['weight_decay'] == 0
