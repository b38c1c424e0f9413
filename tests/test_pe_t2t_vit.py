"""PET2TViT: Table 1/2 counts, the official T2T-ViT-7 forward, PE use,
converter, recipes."""
import math
import os.path as osp
import subprocess
import sys
import uuid

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401  (registers the backbones)
from mmmpvg.engine import mmengine_checkpoint_globals
from mmmpvg.models.converters import (convert_t2t_state_dict,
                                      t2t_checkpoint_weights)
from mmmpvg.models.pe import sinusoid_table
from model_zoo import assert_parameter_count

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
METHODS = ('default', 'lape', 'pvg', 'mpvg')
IN1K = {m: osp.join(REPO, f'configs/t2t_vit/t2t-vit-7_{m}_4xb128_in1k.py')
        for m in METHODS}
CIFAR = {m: osp.join(REPO, 'configs/t2t_vit/'
                     f't2t-vit-7_{m}_transfer_cifar100-224px.py')
         for m in METHODS}

# Official T2T-ViT-7 (spec paper-backbones.md §3), all parameters counted as
# the official main.py does (frozen sinusoidal PE and Performer `w` too):
#   Performer 1: kqv 147*192+192 + proj 64*64+64 + LN(147) 294 + LN(64) 128
#                + mlp 2*(64*64+64)                         =  41,318 + w 2,048
#   Performer 2: kqv 576*192+192 + proj 4,160 + LN(576) 1,152 + LN(64) 128
#                + mlp 8,320                                = 124,544 + w 2,048
#   project 576*256+256 = 147,712; cls 256; pos 197*256 = 50,432
#   7 blocks x (LN 512 + qkv 256*768 + proj 65,792 + LN 512
#               + fc1 131,584 + fc2 131,328 = 526,336)       = 3,684,352
#   final LN 512; head 256*1000+1000 = 257,000               -> 4,310,222
# LaPE: + 7 PE LNs x 512 = 4,313,806. PVG: - cls 256 - pos row 256 + 6 PE
# LNs x 512 = 4,312,782. MPVG: + LN'' 512 = 4,313,294.
# CIFAR-100 at 224 px: head 256*100+100 = 25,700, i.e. 231,300 fewer.
TABLE1_T2T = {'default': 4_310_222, 'lape': 4_313_806, 'pvg': 4_312_782,
              'mpvg': 4_313_294}
TABLE2_T2T = {m: n - 231_300 for m, n in TABLE1_T2T.items()}
TABLE1_PAPER = {'default': 4.310, 'lape': 4.313, 'pvg': 4.312, 'mpvg': 4.313}
TABLE2_PAPER = {'default': 4.078, 'lape': 4.082, 'pvg': 4.081, 'mpvg': 4.081}

TINY_ARCH = dict(embed_dims=32, num_layers=3, num_heads=2,
                 feedforward_channels=64)


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def gap_kwargs(method):
    if method in ('pvg', 'mpvg'):
        return dict(with_cls_token=False, out_type='avg_featmap')
    return {}


def build_backbone(method='default', **kwargs):
    cfg = dict(type='PET2TViT', pe_cfg=dict(method=method),
               **gap_kwargs(method))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def randomised(model, seed=0):
    """Random values in every parameter (LN shifts, biases, the PE)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


# ----- a plain re-implementation of official T2T-ViT-7 (official names) ---
class RefPerformer(nn.Module):
    """models/token_performer.py: Token_performer (eval: no dropout)."""

    def __init__(self, dim, in_dim, kernel_ratio=0.5):
        super().__init__()
        self.emb = in_dim
        self.kqv = nn.Linear(dim, 3 * in_dim)
        self.proj = nn.Linear(in_dim, in_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(in_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(),
                                 nn.Linear(in_dim, in_dim), nn.Dropout(0.))
        self.m = int(in_dim * kernel_ratio)
        self.w = nn.Parameter(torch.randn(self.m, in_dim),
                              requires_grad=False)

    def prm_exp(self, x):
        xd = (x * x).sum(-1, keepdim=True).repeat(1, 1, self.m) / 2
        wtx = torch.einsum('bti,mi->btm', x, self.w)
        return torch.exp(wtx - xd) / math.sqrt(self.m)

    def forward(self, x):
        x = self.norm1(x)
        k, q, v = torch.split(self.kqv(x), self.emb, dim=-1)
        kp, qp = self.prm_exp(k), self.prm_exp(q)
        d = torch.einsum('bti,bi->bt', qp, kp.sum(dim=1)).unsqueeze(2)
        kptv = torch.einsum('bin,bim->bnm', v, kp)
        y = torch.einsum('bti,bni->btn', qp, kptv) / (d + 1e-8)
        x = v + self.proj(y)
        return x + self.mlp(self.norm2(x))


class RefBlock(nn.Module):
    """models/transformer_block.py: Block (qkv_bias False)."""

    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(
            b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) * (c // self.heads)**-0.5).softmax(-1)
        x = x + self.attn.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class RefT2TViT7(nn.Module):
    """models/t2t_vit.py: T2T_ViT(tokens_type='performer', embed_dim=256,
    depth=7, num_heads=4, mlp_ratio=2) forward."""

    def __init__(self, num_classes=1000, img_size=224):
        super().__init__()
        self.tokens_to_token = nn.Module()
        self.tokens_to_token.attention1 = RefPerformer(3 * 49, 64)
        self.tokens_to_token.attention2 = RefPerformer(64 * 9, 64)
        self.tokens_to_token.project = nn.Linear(64 * 9, 256)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 256))
        self.pos_embed = nn.Parameter(
            sinusoid_table((img_size // 16)**2 + 1, 256), requires_grad=False)
        self.blocks = nn.ModuleList(RefBlock(256, 4, 512) for _ in range(7))
        self.norm = nn.LayerNorm(256)
        self.head = nn.Linear(256, num_classes)

    def forward(self, x):
        t2t = self.tokens_to_token
        x = F.unfold(x, 7, stride=4, padding=2).transpose(1, 2)
        for attention in (t2t.attention1, t2t.attention2):
            x = attention(x)
            b, hw, c = x.shape
            side = math.isqrt(hw)
            x = x.transpose(1, 2).reshape(b, c, side, side)
            x = F.unfold(x, 3, stride=2, padding=1).transpose(1, 2)
        x = t2t.project(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


# ----- counts --------------------------------------------------------------
@pytest.mark.parametrize('method', METHODS)
def test_parameter_counts_match_tables_1_and_2(method):
    assert_parameter_count(IN1K[method], TABLE1_PAPER[method],
                           exact=TABLE1_T2T[method])
    assert_parameter_count(CIFAR[method], TABLE2_PAPER[method],
                           exact=TABLE2_T2T[method])


def test_frozen_parameters_are_the_sinusoidal_pe_and_performer_features():
    model = build_backbone('default')
    frozen = sorted(n for n, p in model.named_parameters()
                    if not p.requires_grad)
    assert frozen == ['pos_embed', 'tokens_to_token.attention1.w',
                      'tokens_to_token.attention2.w']
    torch.testing.assert_close(model.pos_embed, sinusoid_table(197, 256))
    # Counting trainable parameters only would give 4.255M, not 4.310.
    classifier = MODELS.build(Config.fromfile(IN1K['default']).model)
    assert sum(p.numel() for p in classifier.parameters()
               if p.requires_grad) == 4_255_694


# ----- the official forward ------------------------------------------------
@pytest.mark.parametrize('use_ema', [True, False])
def test_default_equals_official_t2t_vit_7_through_the_converter(use_ema):
    torch.manual_seed(0)
    official = randomised(RefT2TViT7(), seed=1)
    other = randomised(RefT2TViT7(), seed=2)
    with torch.no_grad():  # the official table, not random values
        for ref in (official, other):
            ref.pos_embed.copy_(sinusoid_table(197, 256))
    weights = {'module.' + k: v for k, v in official.state_dict().items()}
    decoy = other.state_dict()
    checkpoint = dict(state_dict_ema=weights, state_dict=decoy) if use_ema \
        else dict(state_dict=weights, state_dict_ema=decoy)
    state_dict, notes = convert_t2t_state_dict(
        t2t_checkpoint_weights(checkpoint, use_ema=use_ema),
        dict(method='default'))
    assert notes == []
    model = MODELS.build(Config.fromfile(IN1K['default']).model).eval()
    model.load_state_dict(state_dict, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, mode='tensor'), official(x), rtol=1e-4, atol=1e-4)


def test_performer_is_official_token_performer():
    torch.manual_seed(0)
    ours = build_backbone('default').tokens_to_token.attention2
    ours = randomised(ours, seed=3)
    ref = RefPerformer(576, 64)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 49, 576)
    torch.testing.assert_close(ours(x), ref.eval()(x))
    names = sorted(n for n, _ in ours.named_parameters())
    assert names == sorted(n for n, _ in ref.named_parameters())


def test_performer_kernel_stays_fp32_under_autocast():
    torch.manual_seed(0)
    performer = build_backbone('default').tokens_to_token.attention1.eval()
    q, k, v = torch.randn(3, 2, 64, 64).unbind(0)
    with torch.no_grad():
        full = performer.linear_attention(q, k, v)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            amp = performer.linear_attention(q, k, v)
            x = torch.randn(2, 64, 147)
            assert performer(x).dtype == torch.bfloat16  # the Linears
    assert amp.dtype == torch.float32
    torch.testing.assert_close(amp, full, rtol=0, atol=0)


def test_official_w_is_orthogonal_and_scaled():
    w = build_backbone('default').tokens_to_token.attention1.w
    # rows orthogonal, each of norm sqrt(m) = sqrt(32)
    torch.testing.assert_close(w @ w.t(), 32 * torch.eye(32), atol=1e-4,
                               rtol=1e-4)


# ----- where the PE goes ---------------------------------------------------
def expected_chain(model, method):
    """Eq. 6/9 written out: what each block's attention gets added."""
    pos = model.pos_embed
    norms = model.pe.layer_norms
    pe, chain = [], pos
    for layer in range(len(model.encoder)):
        if str(layer) in norms:
            chain = norms[str(layer)](chain)
            pe.append(chain)
        else:
            pe.append(None)
    return pe


@pytest.mark.parametrize('method,layers', [
    ('default', []), ('lape', list(range(7))), ('pvg', list(range(1, 7))),
    ('mpvg', list(range(1, 7)))])
def test_the_chain_enters_each_block_where_the_paper_puts_it(method, layers):
    model = randomised(build_backbone(method, img_size=64), seed=4)
    assert model.pe.layers_with_pe() == layers
    seen = {}

    def block_hook(index):
        def hook(module, args):
            seen.setdefault(index, {})['x'] = args[0]
        return hook

    def attn_hook(index):
        def hook(module, args):
            seen[index]['attn_in'] = args[0]
        return hook

    for i, block in enumerate(model.encoder):
        block.register_forward_pre_hook(block_hook(i))
        block.attn.register_forward_pre_hook(attn_hook(i))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model(x)
        tokens, _ = model.tokens_to_token(x)
        if model.cls_token is not None:
            tokens = torch.cat([model.cls_token.expand(2, -1, -1), tokens], 1)
        expected_input = tokens if method == 'lape' else \
            tokens + model.pos_embed
        torch.testing.assert_close(seen[0]['x'], expected_input)
        for i, pe in enumerate(expected_chain(model, method)):
            block = model.encoder[i]
            normed = block.ln1(seen[i]['x'])
            want = normed if pe is None else normed + pe
            torch.testing.assert_close(seen[i]['attn_in'], want)
        rows = 17 if method in ('default', 'lape') else 16
        assert model.pos_embed.shape == (1, rows, 256)


def test_learnable_pe_knob_trains_the_table():
    model = build_backbone('mpvg', pos_source='learnable', img_size=64)
    assert model.pos_embed.requires_grad
    assert num_params(model) == num_params(
        build_backbone('mpvg', img_size=64))


def test_other_input_sizes_resize_pos0_before_the_chain():
    model = randomised(build_backbone('lape', img_size=64), seed=6)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 96))[0]
    assert out.shape == (1, 256)
    resized = model.resized_pos_embed((6, 6))
    assert resized.shape == (1, 37, 256)
    # A checkpoint saved at 64 px loads into a 96 px model (PE resized).
    big = build_backbone('lape', img_size=96)
    big.load_state_dict(model.state_dict())
    torch.testing.assert_close(big.pos_embed, resized)


@pytest.mark.parametrize('kwargs,error,message', [
    (dict(arch='t2t-vit-99'), ValueError, 'not in default archs'),
    (dict(arch=dict(embed_dims=8)), ValueError, 'exactly the keys'),
    (dict(pos_source='external'), ValueError, "'sinusoidal' or"),
    (dict(pe_cfg=dict(method='mpvg')), ValueError, 'global average'),
    (dict(frozen_parts=['head']), ValueError, "'head' names no parameter"),
    (dict(pe_cfg=dict(method='mpvg'), with_cls_token=False,
          out_type='avg_featmap', final_norm=False), ValueError,
     'final_norm=True'),
])
def test_meaningless_options_are_refused(kwargs, error, message):
    cfg = dict(type='PET2TViT', img_size=64)
    cfg.update(kwargs)
    with pytest.raises(error, match=message):
        MODELS.build(cfg)


def test_layer_depths_for_layer_decay():
    model = build_backbone('lape', img_size=64)
    depth = {name: model.get_layer_depth('backbone.' + name, 'backbone.')[0]
             for name, _ in model.named_parameters()}
    assert depth['tokens_to_token.attention1.w'] == 0
    assert depth['cls_token'] == depth['pos_embed'] == 0
    assert depth['encoder.0.ln1.weight'] == depth['pe.layer_norms.0.bias'] \
        == 1
    assert depth['encoder.6.ffn.layers.1.bias'] == \
        depth['pe.layer_norms.6.weight'] == 7
    assert depth['norm.weight'] == 8
    assert model.get_layer_depth('head.weight', 'backbone.') == (8, 9)


# ----- recipes -------------------------------------------------------------
def schedule(cfg, epochs):
    """The lr at each epoch as mmengine's schedulers set it."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))],
                                lr=cfg.optim_wrapper.optimizer.lr)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer))
                  for s in (cfg.param_scheduler if isinstance(
                      cfg.param_scheduler, list) else [cfg.param_scheduler])]
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for s in schedulers:
            s.step()
    return lrs


def test_imagenet_recipe_is_the_official_command():
    cfg = Config.fromfile(IN1K['mpvg'])
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == (
        'AdamW', 1e-3, 0.03)
    assert cfg.train_dataloader.batch_size * 4 == 512
    assert cfg.auto_scale_lr.base_batch_size == 512
    assert cfg.model.backbone.drop_path_rate == 0.1
    assert [h.momentum for h in cfg.custom_hooks if h.type == 'EMAHook'
            ] == [4e-5]  # timm's ModelEmaV2(decay=0.99996), per iteration
    assert cfg.train_cfg.max_epochs == 310
    lrs = schedule(cfg, 310)
    # timm (epoch-stepped): warm-up 1e-6 + t (1e-3 - 1e-6) / 10 (t < 10),
    # cosine 1e-5 + (1e-3 - 1e-5) (1 + cos(pi t / 300)) / 2 up to epoch 300,
    # then 10 cool-down epochs at min_lr 1e-5.
    timm = [1e-6 + t * (1e-3 - 1e-6) / 10 if t < 10 else
            1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * t / 300))
            if t < 300 else 1e-5 for t in range(310)]
    # mmengine's LinearLR reaches the base lr at its last epoch (9), and
    # mmpretrain's cosine runs T_max=290 from epoch 10: within 1.2e-4 of
    # timm in the warm-up, within 3.1e-5 after it; the cool-down holds the
    # last cosine value, 1.003e-5 (timm: min_lr 1e-5).
    assert lrs[0] == pytest.approx(1e-6) and lrs[9] == pytest.approx(1e-3)
    assert max(abs(a - b) for a, b in zip(lrs[:10], timm[:10])) < 1.2e-4
    assert max(abs(a - b) for a, b in zip(lrs[10:], timm[10:])) < 3.1e-5
    assert lrs[300:] == pytest.approx(timm[300:], rel=3e-3)
    assert len(set(lrs[299:])) == 1


def optimizer_lrs(cfg):
    """{parameter name: lr} of what the optimizer updates, and the names of
    the parameters it leaves alone."""
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {names[id(p)]: group['lr'] for group in wrapper.param_groups
           for p in group['params'] if id(p) in names}
    left_out = {n for n, p in model.named_parameters() if n not in lrs}
    assert all(not p.requires_grad for n, p in model.named_parameters()
               if n in left_out)
    return lrs, left_out


@pytest.mark.parametrize('method', METHODS)
def test_transfer_parameter_groups_are_the_official_ones(method):
    cfg = Config.fromfile(CIFAR[method])
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', prefix='backbone.',
        checkpoint=f'work_dirs/t2t-vit-7_{method}_4xb128_in1k/epoch_310.pth')
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.momentum,
            optimizer.weight_decay) == ('SGD', 5e-2, 0.9, 5e-4)
    trained, frozen = optimizer_lrs(cfg)
    # Official: cls_token, pos_embed and the final norm are in no group;
    # ours: MPVG's LN'' (a top-level norm like the final one) as well.
    expected_frozen = {'backbone.norm.bias', 'backbone.norm.weight',
                       'backbone.pos_embed',
                       'backbone.tokens_to_token.attention1.w',
                       'backbone.tokens_to_token.attention2.w'}
    if method in ('default', 'lape'):
        expected_frozen.add('backbone.cls_token')
    if method == 'mpvg':
        expected_frozen |= {'backbone.pe.last_pos_norm.bias',
                            'backbone.pe.last_pos_norm.weight'}
    assert frozen == expected_frozen
    for name, lr in trained.items():
        if name.startswith('head.'):
            assert lr == pytest.approx(5e-2), name
        else:
            assert name.startswith(('backbone.tokens_to_token.',
                                    'backbone.encoder.',
                                    'backbone.pe.layer_norms.')), name
            assert lr == pytest.approx(5e-4), name
    # torch's CosineAnnealingLR(T_max=60, eta_min=2e-4) over the 60 epochs.
    official = [2e-4 + (5e-2 - 2e-4) * (1 + math.cos(math.pi * t / 60)) / 2
                for t in range(60)]
    assert schedule(cfg, 60) == pytest.approx(official, rel=1e-6)


def test_transfer_data_is_cifar_resized_to_224():
    cfg = Config.fromfile(CIFAR['mpvg'])
    assert cfg.train_dataloader.dataset.type == 'CIFAR100'
    assert cfg.train_dataloader.batch_size == 128
    assert [t['type'] for t in cfg.train_pipeline] == [
        'Resize', 'RandomCrop', 'RandomFlip', 'PackInputs']
    assert cfg.train_pipeline[1] == dict(type='RandomCrop', crop_size=224,
                                         padding=28)
    assert cfg.model.head.loss == dict(type='CrossEntropyLoss',
                                       loss_weight=1.0)
    assert 'augments' not in cfg.model.get('train_cfg', {}) or \
        not cfg.model.train_cfg.augments
    assert cfg.data_preprocessor.mean == pytest.approx(
        [125.307, 122.961, 113.8575])


@pytest.mark.slow
def test_converter_script_writes_a_checkpoint_the_pvg_model_loads(tmp_path):
    """... with the fixed table of a freshly built PVG model: positions
    0..195 of the official 197-row table, not 1..196."""
    official = randomised(RefT2TViT7(), seed=7)
    official.pos_embed.data = sinusoid_table(197, 256)
    src = tmp_path / 'official.pth.tar'
    torch.save(dict(state_dict_ema=official.state_dict(),
                    state_dict=randomised(RefT2TViT7(), 8).state_dict()),
               src)
    dst = tmp_path / 'pvg.pth'
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/model_converters/'
                                  't2t_to_mmmpvg.py'),
         str(src), str(dst), '--pe-method', 'pvg'],
        capture_output=True, text=True, check=True,
        env={**__import__('os').environ, 'PYTHONPATH': REPO})
    assert 'dropped cls_token' in result.stdout
    state_dict = torch.load(dst, weights_only=True)['state_dict']
    model = MODELS.build(Config.fromfile(IN1K['pvg']).model)
    fresh_table = model.backbone.pos_embed.clone()
    incompatible = model.load_state_dict(state_dict, strict=False)
    assert incompatible.unexpected_keys == []
    assert sorted(incompatible.missing_keys) == sorted(
        f'backbone.pe.layer_norms.{i}.{w}' for i in range(1, 7)
        for w in ('weight', 'bias'))
    assert torch.equal(model.backbone.pos_embed, fresh_table)
    torch.testing.assert_close(
        model.backbone.encoder[3].ffn.layers[1].weight,
        official.blocks[3].mlp.fc2.weight)


# ----- CIFAR-100 transfer through tools/train.py ---------------------------
def tiny_options(arch=TINY_ARCH, img=32):
    """``--cfg-options`` that shrink T2T-ViT-7 to a 2x2-token model."""
    options = ['model.backbone.arch._delete_=True']
    options += [f'model.backbone.arch.{k}={v}' for k, v in arch.items()]
    return options + [f'model.backbone.img_size={img}',
                      'model.backbone.t2t_cfg.token_dims=16',
                      f"model.head.in_channels={arch['embed_dims']}"]


@pytest.mark.slow
def test_transfer_config_trains_from_the_imagenet_checkpoint(
        tmp_path, train_tool, make_runner, one_thread):
    from mmengine.runner import Runner

    from mmmpvg.datasets import make_cifar100
    from mmmpvg.engine import enable_amp

    data = make_cifar100(str(tmp_path / 'cifar'), num_train=8, num_test=4)
    # A short run of the ImageNet MPVG config (tiny arch, the generated
    # images instead of ImageNet's files, --amp as the official command):
    # Mixup/CutMix, AdamW, EMAHook. Its checkpoint holds the EMA weights in
    # `state_dict` and the raw ones in `ema_state_dict` (EMAHook's swap).
    imagenet_cfg = Config.fromfile(IN1K['mpvg'])
    imagenet_cfg.model.backbone.update(arch=TINY_ARCH, img_size=32,
                                       t2t_cfg=dict(token_dims=16))
    imagenet_cfg.model.head.in_channels = TINY_ARCH['embed_dims']
    pipeline = [dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]
    for loader in ('train', 'val', 'test'):
        imagenet_cfg[f'{loader}_dataloader'].update(
            batch_size=4, num_workers=0, persistent_workers=False,
            dataset=dict(type='GeneratedCIFAR100', data_root=data,
                         split='train' if loader == 'train' else 'test',
                         pipeline=pipeline))
    imagenet_cfg.update(
        work_dir=str(tmp_path / 'imagenet'),
        experiment_name=f'in1k-{uuid.uuid4().hex}',
        custom_imports=dict(imports=['mmmpvg.models', 'mmmpvg.datasets']),
        train_cfg=dict(by_epoch=True, max_epochs=1, val_interval=1),
        val_evaluator=dict(type='Accuracy', topk=(1, )),
        test_evaluator=dict(type='Accuracy', topk=(1, )))
    Runner.from_cfg(enable_amp(imagenet_cfg)).train()
    checkpoint = tmp_path / 'imagenet' / 'epoch_1.pth'
    with mmengine_checkpoint_globals():
        saved = torch.load(checkpoint, map_location='cpu')
    ema, raw = saved['state_dict'], saved['ema_state_dict']
    assert ema['head.layers.head.weight'].shape == (1000, 32)

    options = tiny_options() + [
        'custom_imports.imports=[mmmpvg.models,mmmpvg.datasets]',
        f'model.backbone.init_cfg.checkpoint={checkpoint}',
        'train_dataloader.dataset.pipeline.0.scale=32',
        'train_dataloader.dataset.pipeline.1.crop_size=32',
        'train_dataloader.dataset.pipeline.1.padding=4',
        'val_dataloader.dataset.pipeline.0.scale=32',
        'test_dataloader.dataset.pipeline.0.scale=32',
        'train_cfg.max_epochs=1',
        'randomness.seed=0',
        'default_hooks.logger.interval=1',
    ]
    for loader in ('train', 'val', 'test'):
        options += [f'{loader}_dataloader.dataset.type=GeneratedCIFAR100',
                    f'{loader}_dataloader.dataset.data_root={data}',
                    f'{loader}_dataloader.num_workers=0',
                    f'{loader}_dataloader.batch_size=4']
    runner = make_runner(train_tool, CIFAR['mpvg'], tmp_path / 'work',
                         options)
    runner.train()

    model = runner.model
    loaded = {'backbone.' + k: v for k, v in
              model.backbone.state_dict().items()}
    for name in ('backbone.norm.weight', 'backbone.pe.last_pos_norm.bias',
                 'backbone.pos_embed',
                 'backbone.tokens_to_token.attention2.w'):
        # frozen: still the ImageNet EMA value after two SGD steps
        torch.testing.assert_close(loaded[name], ema[name], rtol=0, atol=0)
    # the EMA weights were loaded, not the raw ones
    name = 'backbone.norm.weight'
    assert not torch.equal(ema[name], raw['module.' + name])
    for name in ('backbone.encoder.1.attn.qkv.weight',
                 'backbone.pe.layer_norms.1.weight',
                 'backbone.tokens_to_token.project.bias'):
        # loaded, then moved a little at 0.01 x lr
        assert not torch.equal(loaded[name], ema[name])
        torch.testing.assert_close(loaded[name], ema[name], atol=1e-2,
                                   rtol=0)
    head = model.head.layers.head
    assert head.weight.shape == (100, 32)
    # re-initialised (TruncNormal std 0.02), not the ImageNet head's rows
    assert 0.01 < head.weight.std().item() < 0.04
    assert not torch.allclose(head.weight,
                              ema['head.layers.head.weight'][:100],
                              atol=1e-2)
    names = {id(p): n for n, p in model.named_parameters()}
    initial = {names[id(p)]: group['initial_lr']
               for group in runner.optim_wrapper.param_groups
               for p in group['params'] if id(p) in names}
    assert initial['head.layers.head.weight'] == pytest.approx(5e-2)
    assert initial['backbone.encoder.0.ln1.weight'] == pytest.approx(5e-4)
    assert initial['backbone.pe.layer_norms.1.bias'] == pytest.approx(5e-4)
    assert initial['backbone.tokens_to_token.attention1.kqv.weight'] == \
        pytest.approx(5e-4)
    assert 'backbone.norm.weight' not in initial
