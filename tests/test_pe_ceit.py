"""PECeiT: Table 1 CeiT-Ti counts, the official forward through the
converter, where the PE enters, Eq. 11 after pooling, configs."""
import glob
import os.path as osp
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from mmengine.config import Config
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401  (registers PECeiT)
from mmmpvg.models.converters import convert_ceit_state_dict
from pe_reference import (attention, load_pe_norms, method_rules, num_params,
                          optimizer_groups, pe_chain, random_pe_norms,
                          randomised)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CEIT_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs/ceit/*.py')))

# CeiT-Ti with a 1000-class head (spec §2.1):
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

DIMS, DEPTH, HEADS, HIDDEN, STEM, CLASSES = 24, 3, 3, 48, 8, 10
TINY = dict(arch=dict(embed_dims=DIMS, num_layers=DEPTH, num_heads=HEADS,
                      feedforward_channels=HIDDEN),
            img_size=64, stem_channels=STEM)
GRID = 4  # 64 px -> 16 I2T features -> 4x4 patches of 4
EPS = 1e-6


def tiny_classifier(method):
    pool = 'cls' if method in ('default', 'lape') else 'avg'
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='PECeiT', global_pool=pool,
                      pe_cfg=dict(method=method), **TINY),
        head=dict(type='LinearClsHead', num_classes=CLASSES,
                  in_channels=DIMS)))


def official_state_dict(seed=0):
    """Random weights with the official ``ceit_model.py`` names/shapes."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, mean=0.0):
        return mean + 0.1 * torch.randn(*shape, generator=gen)

    state = {}

    def norm(prefix, dims):
        state[prefix + '.weight'] = rand(dims, mean=1.0)
        state[prefix + '.bias'] = rand(dims)

    def bn(prefix, dims):
        norm(prefix, dims)
        state[prefix + '.running_mean'] = rand(dims)
        state[prefix + '.running_var'] = 0.5 + torch.rand(dims,
                                                          generator=gen)
        state[prefix + '.num_batches_tracked'] = torch.tensor(7)

    def linear(prefix, out, inp, *kernel):
        state[prefix + '.weight'] = rand(out, inp, *kernel)
        state[prefix + '.bias'] = rand(out)

    state['i2t.backbone.conv.weight'] = rand(STEM, 3, 7, 7)
    bn('i2t.backbone.bn', STEM)
    linear('i2t.proj', DIMS, STEM, 4, 4)
    state['cls_token'] = rand(1, 1, DIMS)
    state['pos_embed'] = rand(1, GRID * GRID + 1, DIMS)
    for i in range(DEPTH):
        b = f'blocks.{i}'
        norm(b + '.norm1', DIMS)
        linear(b + '.attn.qkv', 3 * DIMS, DIMS)
        linear(b + '.attn.proj', DIMS, DIMS)
        norm(b + '.norm2', DIMS)
        linear(b + '.leff.conv1', HIDDEN, DIMS, 1, 1)
        bn(b + '.leff.bn1', HIDDEN)
        linear(b + '.leff.conv2', HIDDEN, 1, 3, 3)
        bn(b + '.leff.bn2', HIDDEN)
        linear(b + '.leff.conv3', DIMS, HIDDEN, 1, 1)
        bn(b + '.leff.bn3', DIMS)
    norm('lca.norm1', DIMS)
    linear('lca.attn.qkv', 3 * DIMS, DIMS)
    linear('lca.attn.proj', DIMS, DIMS)
    norm('lca.norm2', DIMS)
    linear('lca.feedforward.fc1', HIDDEN, DIMS)
    linear('lca.feedforward.fc2', DIMS, HIDDEN)
    state['pos_layer_embed'] = rand(1, DEPTH, DIMS)
    norm('norm', DIMS)
    linear('head', CLASSES, DIMS)
    return state


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
    x = x.flatten(2).transpose(1, 2)
    pos = sd['pos_embed']
    if rules['cls']:
        x = torch.cat([sd['cls_token'].expand(len(x), -1, -1), x], 1)
    else:
        pos = pos[:, 1:]
    if rules['add']:
        x = x + pos
    chain = pe_chain(pos, pe_norms, DEPTH, EPS)
    extra = 1 if rules['cls'] else 0
    per_layer = []
    for i in range(DEPTH):
        b = f'blocks.{i}.'
        attn_in = ln(x, b + 'norm1')
        if chain[i] is not None:
            attn_in = attn_in + chain[i]
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
    model = MODELS.build(Config.fromfile(config_of(method)).model)
    count = num_params(model)
    assert count == TABLE1_CEIT[method]
    assert int(count / 1000) / 1000 == TABLE1_CEIT_PAPER[method]


def test_metafile_lists_every_config_with_its_count():
    with open(osp.join(REPO, 'configs/ceit/metafile.yml')) as f:
        entries = yaml.safe_load(f)['Models']
    listed = {osp.join(REPO, e['Config']): e for e in entries}
    assert set(listed) == set(CEIT_CONFIGS)
    for path, entry in listed.items():
        method = osp.basename(path).split('_')[1]
        assert entry['Metadata']['Parameters'] == TABLE1_CEIT[method]
        assert entry['Metadata']['Paper Parameters (M)'] == \
            TABLE1_CEIT_PAPER[method]
    with open(osp.join(REPO, 'model-index.yml')) as f:
        assert 'configs/ceit/metafile.yml' in yaml.safe_load(f)['Import']


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


@pytest.mark.parametrize('method', ['default', 'lape', 'pvg', 'mpvg'])
def test_forward_equals_the_official_forward_through_the_converter(method):
    rules = method_rules(method, DEPTH, pe_in_layer0=True)
    sd = official_state_dict()
    model = tiny_classifier(method)
    converted, notes = convert_ceit_state_dict(
        sd, dict(method=method), 'cls' if rules['cls'] else 'avg')
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert unexpected == []
    assert all('.pe.layer_norms.' in k or '.pe.last_pos_norm.' in k
               for k in missing)
    assert len(missing) == 2 * (len(rules['layers']) + rules['last'])
    gen = torch.Generator().manual_seed(1)
    norms, last = random_pe_norms(rules, DIMS, gen)
    load_pe_norms(model.backbone, norms, last)
    model.eval()
    images = torch.randn(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        expected = reference_logits(sd, images, rules, norms, last)
        torch.testing.assert_close(model(images, mode='tensor'), expected,
                                   rtol=1e-4, atol=1e-5)
    if not rules['cls']:
        assert any('dropped cls_token' in note for note in notes)


@pytest.mark.parametrize('method', ['default', 'lape', 'pvg', 'mpvg'])
def test_pe_enters_each_layer_at_the_attention_input(method):
    """Hooks: x_0 gets pos_0 only when the method adds it; layer l's
    attention sees ``ln1(x_l) + pe_l`` with pe_l the LN chain on pos_0
    (PVG/MPVG: layers 0..11, the CeiT decision); LeFF sees ``ln2(x)``
    untouched; the LCA sees the per-layer class tokens (Default, LaPE) or
    token means (PVG, MPVG) plus ``pos_layer_embed``."""
    rules = method_rules(method, DEPTH, pe_in_layer0=True)
    backbone = randomised(tiny_classifier(method)).backbone
    assert backbone.pe.layers_with_pe() == rules['layers']
    seen = {}

    def keep(name, use_output=True):
        def hook(module, args, output=None):
            seen[name] = output if use_output else args[0]
        return hook

    backbone.patch_embed.register_forward_hook(
        lambda m, a, out: seen.__setitem__('patches', out[0]))
    for i, layer in enumerate(backbone.layers):
        layer.register_forward_pre_hook(keep(f'x{i}', use_output=False))
        layer.register_forward_hook(keep(f'out{i}'))
        layer.ln1.register_forward_hook(keep(f'ln1_{i}'))
        layer.attn.register_forward_pre_hook(keep(f'attn{i}', False))
        layer.ln2.register_forward_hook(keep(f'ln2_{i}'))
        layer.leff.register_forward_pre_hook(keep(f'leff{i}', False))
    backbone.lca.register_forward_pre_hook(keep('lca', False))
    with torch.no_grad():
        backbone(torch.randn(2, 3, 64, 64))
        pos = backbone.pos_embed
        norms = {layer: (n.weight, n.bias) for layer, n in
                 ((int(k), n) for k, n in backbone.pe.layer_norms.items())}
        chain = pe_chain(pos, norms, DEPTH, EPS)
        tokens = seen['patches']
        if rules['cls']:
            tokens = torch.cat(
                [backbone.cls_token.expand(2, -1, -1), tokens], 1)
        x0 = tokens + pos if rules['add'] else tokens
        torch.testing.assert_close(seen['x0'], x0)
        pooled = []
        for i in range(DEPTH):
            expected = seen[f'ln1_{i}']
            if chain[i] is not None:
                expected = expected + chain[i]
            torch.testing.assert_close(seen[f'attn{i}'], expected)
            torch.testing.assert_close(seen[f'leff{i}'], seen[f'ln2_{i}'])
            out = seen[f'out{i}']
            pooled.append(out[:, 0] if rules['cls'] else out.mean(1))
        torch.testing.assert_close(
            seen['lca'], torch.stack(pooled, 1) + backbone.pos_layer_embed)


def test_other_input_sizes_resize_the_pe_and_bad_sizes_are_refused():
    backbone = tiny_classifier('mpvg').backbone.eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 96, 64))[0].shape == (1, DIMS)
    with pytest.raises(ValueError, match='multiple of 16'):
        backbone(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match='global average pooling'):
        MODELS.build(dict(type='PECeiT', global_pool='cls',
                          pe_cfg=dict(method='mpvg'), **TINY))


@pytest.mark.slow
def test_converter_script_writes_a_checkpoint_the_mpvg_model_loads(tmp_path):
    src = tmp_path / 'ceit_official.pth'
    torch.save({'model': official_state_dict()}, src)
    dst = tmp_path / 'mpvg.pth'
    result = subprocess.run(
        [sys.executable, 'tools/model_converters/ceit_to_mmmpvg.py',
         str(src), str(dst), '--pe-method', 'mpvg'],
        cwd=REPO, capture_output=True, text=True, check=True)
    assert f'PE norms of layers 0..{DEPTH - 1} are new' in result.stdout
    converted = torch.load(dst, weights_only=True)['state_dict']
    missing, unexpected = tiny_classifier('mpvg').load_state_dict(
        converted, strict=False)
    assert unexpected == []
    assert sorted(missing) == sorted(
        [f'backbone.pe.layer_norms.{i}.{w}' for i in range(DEPTH)
         for w in ('weight', 'bias')] +
        [f'backbone.pe.last_pos_norm.{w}' for w in ('weight', 'bias')])


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
    cfg = Config.fromfile(config_of(method))
    cfg.model.backbone.update(TINY)
    cfg.model.head.update(num_classes=CLASSES, in_channels=DIMS)
    cfg.model.train_cfg = None
    model = MODELS.build(cfg.model)
    groups = optimizer_groups(model, cfg.optim_wrapper)
    assert len(groups) == len(list(model.parameters()))
    for name, group in groups.items():
        no_decay = model.get_parameter(name).dim() == 1 or name.endswith(
            ('cls_token', 'pos_embed'))
        assert group['weight_decay'] == (0 if no_decay else 0.05), name
    assert groups['backbone.pos_layer_embed']['weight_decay'] == 0.05
    assert groups['backbone.pe.layer_norms.1.weight']['weight_decay'] == 0
