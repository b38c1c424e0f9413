"""The backbone contract, checked the same way for every family x method.

Each family's own test file keeps what is particular to it (its check
against the official code, its stem, its recipe); what the contract
promises is checked here once, including for a toy family declared below
in a few lines, which shows the contract is all a new family needs.
"""
import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import EMAHook
from mmengine.model import BaseModule
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from mmmpvg.models.pe import (PEBackboneMixin, PEBlockMixin, PEStage,
                              add_pe, fold_pe, pe_key_facts, resolve_pe_cfg)
from pe_families import (IMG_SIZES, METHODS, PE_IN_LAYER0, TINY_BACKBONES,
                         backbone_cfg, bicubic_reference, build, classifier,
                         classifier_cfg, images, uses_class_token)
from pe_reference import method_rules


# ------------------------------------------------ a new family, in 40 lines
class ToyLayer(PEBlockMixin, BaseModule):
    def __init__(self, dims):
        super().__init__()
        self.ln1, self.mlp = nn.LayerNorm(dims), nn.Linear(dims, dims)
        self.attn = nn.MultiheadAttention(dims, 2, batch_first=True)

    def forward(self, x, hw_shape, pe=None):
        q = add_pe(self.ln1(x), pe)
        x = x + self.attn(q, q, q, need_weights=False)[0]
        return x + self.mlp(x)


@MODELS.register_module(force=True)
class ToyViT(PEBackboneMixin, BaseBackbone):
    dims = 16

    def __init__(self, pe_cfg=None, global_pool='avg', img_size=32, **kw):
        super().__init__(**kw)
        dims, self.global_pool = self.dims, global_pool
        self.num_extra_tokens = int(global_pool == 'cls')
        self.patch_embed = nn.Conv2d(3, dims, 8, 8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims)) \
            if global_pool == 'cls' else None
        self.drop_after_pos, self.ln1 = nn.Identity(), nn.LayerNorm(dims)
        self.layers = nn.ModuleList(ToyLayer(dims) for _ in range(2))
        self.build_pe(pe_cfg, (img_size // 8, ) * 2, dict(type='LN'))

    def pe_stages(self):
        return [PEStage(self.layers, self.dims)]

    def forward(self, x):
        x = self.patch_embed(x)
        grid, x = tuple(x.shape[-2:]), x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1)
        x, plan = self.add_input_pe(x, grid)
        for layer, pe in zip(self.layers, plan.per_layer):
            x = layer(x, grid, pe)
        x = self.last_norm_with_pe(x, plan)
        return (x[:, 0] if self.cls_token is not None else x.mean(1), )
# ---------------------------------------------------------------------------


TINY_BACKBONES['toy'] = dict(type='ToyViT', img_size=32)
IMG_SIZES['toy'] = (32, 48)
FAMILIES = sorted(TINY_BACKBONES)
CASES = [(f, m) for f in FAMILIES for m in METHODS]


def num_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('family,method', CASES)
def test_pe_norm_parameters_are_the_papers_rule(family, method):
    """#Params over Default with the same pooling: ``2 C_l`` for every
    layer the paper feeds a PE LN, ``2 C_L`` more for MPVG's LN''."""
    cls_token = uses_class_token(family, method)
    backbone = build(backbone_cfg(family, method))
    default = build(backbone_cfg(family, 'default', cls_token=cls_token))
    rules = method_rules(method, backbone.pe.num_layers,
                         family in PE_IN_LAYER0)
    dims = backbone.pe.layer_dims
    expected = sum(2 * dims[layer] for layer in rules['layers']) + \
        (2 * dims[-1] if rules['last'] else 0)
    assert num_params(backbone) - num_params(default) == expected
    assert backbone.pe.layers_with_pe() == rules['layers']
    assert (backbone.cls_token is not None) == cls_token if hasattr(
        backbone, 'cls_token') else not cls_token


@pytest.mark.parametrize('family', [f for f in FAMILIES if f != 'swin'])
def test_a_class_token_costs_its_token_and_a_pe_row(family):
    dims = build(backbone_cfg(family, 'default')).pos_embed_param.shape[-1]
    with_cls = build(backbone_cfg(family, 'default', cls_token=True))
    without = build(backbone_cfg(family, 'default', cls_token=False))
    assert num_params(with_cls) - num_params(without) == 2 * dims


@pytest.mark.parametrize('family,method', CASES)
def test_forward_backward_reach_every_pe_parameter(family, method):
    model = classifier(family, method).train()
    logits = model(images(family), mode='tensor')
    assert logits.shape == (2, 5)
    logits.square().sum().backward()
    backbone = model.backbone
    pe_params = {n: p for n, p in backbone.named_parameters()
                 if n.startswith(backbone.pe_key_prefixes() + ('cls_token', ))
                 and p.requires_grad}
    assert set(pe_params) >= {n for n, _ in backbone.pe.named_parameters(
        prefix='pe')}
    no_grad = [n for n, p in pe_params.items()
               if p.grad is None or not p.grad.abs().sum()]
    assert no_grad == []
    assert (backbone.pos_embed_name in pe_params) == (
        backbone.pos_source == 'learnable')


@pytest.mark.parametrize('family,method', CASES)
@pytest.mark.parametrize('how', ['dict', 'list', 'classifier'])
def test_pretrained_init_cfg_keeps_every_loaded_weight(
        family, method, how, tmp_path):
    source = classifier(family, method, seed=1)
    path = tmp_path / 'source.pth'
    torch.save(dict(state_dict=source.state_dict()), path)
    pretrained = dict(type='Pretrained', checkpoint=str(path))
    backbone = backbone_cfg(family, method)
    extra = {}
    trunc_normal = dict(type='TruncNormal', layer='Linear', std=.02)
    if how == 'classifier':
        extra['init_cfg'] = [trunc_normal, pretrained]
    else:
        init = dict(pretrained, prefix='backbone.')
        # In a list, Pretrained first: it must still load last.
        backbone['init_cfg'] = init if how == 'dict' else [init, trunc_normal]
    model = build(classifier_cfg(backbone, **extra))
    model.init_weights()
    expected = source.state_dict()
    for key, value in model.state_dict().items():
        if how != 'classifier' and not key.startswith('backbone.'):
            continue
        torch.testing.assert_close(value, expected[key], msg=key)


@pytest.mark.parametrize('family', FAMILIES)
def test_pe_of_another_grid_is_resized_on_load_as_at_forward(family):
    small, big = IMG_SIZES[family]
    source = classifier(family, 'mpvg', img_size=small)
    target = classifier(family, 'mpvg', img_size=big, seed=3)
    target.load_state_dict(source.state_dict())
    backbone = source.backbone
    grid = backbone.pe.grid_size[0]
    expected = bicubic_reference(backbone.pos_embed_param.detach(), grid,
                                 target.backbone.pe.grid_size,
                                 backbone.num_extra_tokens)
    torch.testing.assert_close(target.backbone.pos_embed_param.detach(),
                               expected)
    # The forward of the small model on big images resizes the same way.
    torch.testing.assert_close(
        backbone.resized_pos_embed(target.backbone.pe.grid_size), expected)


@pytest.mark.parametrize('family,method', CASES)
def test_eval_forward_follows_data_writes_and_ema_swaps(family, method):
    """Weights changed through ``.data`` (how EMAHook swaps them and how
    much user code loads them) give what a fresh model with those weights
    gives, even after an eval forward."""
    model, other = classifier(family, method), classifier(
        family, method, seed=7)
    x = images(family)
    with torch.no_grad():
        before = model(x, mode='tensor')
        for mine, theirs in zip(model.state_dict(keep_vars=True).values(),
                                other.state_dict(keep_vars=True).values()):
            mine.data.copy_(theirs.data)
        torch.testing.assert_close(model(x, mode='tensor'),
                                   other(x, mode='tensor'))

    hook = EMAHook()
    hook.before_run(SimpleNamespace(model=model))
    with torch.no_grad():
        for param in hook.ema_model.module.parameters():
            param.add_(0.1)
        swapped = copy.deepcopy(hook.ema_model.module)
        hook._swap_ema_parameters()
        torch.testing.assert_close(model(x, mode='tensor'),
                                   swapped(x, mode='tensor'))
        hook._swap_ema_parameters()  # back, as evaluate_on_origin does
        torch.testing.assert_close(model(x, mode='tensor'),
                                   other(x, mode='tensor'))
    assert not torch.allclose(before, other(x, mode='tensor'))


def count_chain_runs(backbone):
    """Calls of the LN chain, through an instance attribute over
    :meth:`plan_from`."""
    calls = []
    plan_from = backbone.pe.plan_from
    backbone.pe.plan_from = lambda *a: calls.append(1) or plan_from(*a)
    return calls


@pytest.mark.parametrize('family', FAMILIES)
def test_eval_plan_is_reused_until_a_weight_value_changes(family):
    model, other = classifier(family, 'mpvg'), classifier(
        family, 'mpvg', seed=7)
    calls = count_chain_runs(model.backbone)
    x = images(family)
    with torch.no_grad():
        first = model(x, mode='tensor')
        torch.testing.assert_close(model(x, mode='tensor'), first)
        assert len(calls) == 1
        model.load_state_dict(other.state_dict())
        torch.testing.assert_close(model(x, mode='tensor'),
                                   other(x, mode='tensor'))
        assert len(calls) == 2
        # Another grid is another plan.
        model(images(family, IMG_SIZES[family][1]), mode='tensor')
        assert len(calls) == 3
    with torch.enable_grad():  # training-style passes never cache
        model(x, mode='tensor')
    assert len(calls) == 4


@pytest.mark.slow
def test_compiled_eval_forward_follows_data_writes():
    """Under torch.compile the chain is part of the graph (no cache): a
    ``.data`` write between two compiled calls shows in the second."""
    model, other = classifier('swin', 'mpvg'), classifier('swin', 'mpvg',
                                                          seed=7)
    compiled = torch.compile(model.backbone)
    x = images('swin')
    with torch.no_grad():
        torch.testing.assert_close(compiled(x)[0], model.backbone(x)[0],
                                   rtol=1e-4, atol=1e-5)
        for mine, theirs in zip(model.parameters(), other.parameters()):
            mine.data.copy_(theirs.data)
        torch.testing.assert_close(compiled(x)[0], other.backbone(x)[0],
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('family,method', CASES)
def test_layer_depth_puts_the_pe_with_what_it_feeds(family, method):
    backbone = build(backbone_cfg(family, method))
    names = dict(backbone.named_parameters())
    depths = {name: backbone.get_layer_depth(name) for name in names}
    num_depths = {d[1] for d in depths.values()}
    assert num_depths == {backbone.pe.num_layers + 2}
    assert depths[backbone.pos_embed_name][0] == 0
    block_names = {id(m): n for n, m in backbone.named_modules()}
    for layer, block in enumerate(backbone.pe_blocks()):
        prefix = block_names[id(block)] + '.'
        block_depths = {d for n, d in depths.items() if n.startswith(prefix)}
        assert block_depths == {(layer + 1, backbone.pe.num_layers + 2)}
        if str(layer) in backbone.pe.layer_norms:
            assert depths[f'pe.layer_norms.{layer}.weight'][0] == layer + 1
    assert backbone.get_layer_depth('head.fc.weight', 'backbone.')[0] == \
        backbone.pe.num_layers + 1


@pytest.mark.parametrize('family,method', CASES)
def test_folded_pe_gives_the_same_outputs_without_the_chain(family, method):
    model = classifier(family, method)
    x = images(family)
    with torch.no_grad():
        expected = model(x, mode='tensor')
    calls = []
    hooks = [norm.register_forward_hook(lambda *_: calls.append(1))
             for norm in model.backbone.pe.modules()
             if isinstance(norm, nn.LayerNorm)]
    with fold_pe(model, x, 'tensor'):
        calls.clear()
        with torch.no_grad():
            torch.testing.assert_close(model(x, mode='tensor'), expected)
        assert calls == []
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize('family', FAMILIES)
def test_mpvg_minus_pvg_logits_is_one_constant_vector(family):
    """Eq. 11 adds LN''(pos_k), which does not depend on the image: with
    every other weight shared, MPVG's logits are PVG's plus one vector."""
    mpvg = classifier(family, 'mpvg')
    pvg = build(classifier_cfg(backbone_cfg(family, 'pvg'))).eval()
    missing, unexpected = pvg.load_state_dict(mpvg.state_dict(), strict=False)
    assert missing == [] and all('last_pos_norm' in k for k in unexpected)
    x = images(family, batch=3)
    with torch.no_grad():
        shift = mpvg(x, mode='tensor') - pvg(x, mode='tensor')
    torch.testing.assert_close(shift, shift[:1].expand_as(shift))
    assert shift.abs().max() > 1e-3


@pytest.mark.parametrize('family', FAMILIES)
def test_checkpoints_with_earlier_names_load_under_todays(family):
    model = classifier(family, 'mpvg')
    state = model.state_dict()
    backbone = model.backbone
    renames = backbone.legacy_key_map()
    old_state = {}
    for key, value in state.items():
        name = key[len('backbone.'):]
        for old, new in renames.items():
            if name == new or (new.endswith('.') and name.startswith(new)):
                key = 'backbone.' + old + name[len(new):]
        old_state[key] = value
    assert 'backbone.pe.pos_embed' in old_state or family == 'swin'
    fresh = classifier(family, 'mpvg', seed=5)
    fresh.load_state_dict(old_state)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)


@pytest.mark.parametrize('family,method,pos', [
    ('swin', 'mpvg', 'absolute_pos_embed'), ('deit', 'lape', 'pos_embed')])
def test_engine_facts_name_every_pe_backbones_keys(family, method, pos):
    """The keys that differ between PE methods: the LN chain's and the
    class token's (Default and LaPE pool with it)."""
    state = classifier(family, method).state_dict()
    facts = pe_key_facts(classifier(family, method))
    assert facts.resizable == (f'backbone.{pos}', )
    assert {k for k in state if k.startswith(facts.method_prefixes)} == {
        k for k in state
        if k.startswith(('backbone.pe.', 'backbone.cls_token'))}


@pytest.mark.parametrize('family', FAMILIES)
def test_train_and_eval_return_the_backbone(family):
    """nn.Module's contract, which mmpretrain's BaseBackbone breaks:
    ``torch.compile(model.eval())`` and ``m = model.eval()`` need it."""
    model = build(backbone_cfg(family, 'default'))
    assert model.eval() is model and not model.training
    assert model.train() is model and model.training


@pytest.mark.parametrize('family', FAMILIES)
def test_presets_resolve_once_for_every_caller(family):
    cls = MODELS.get(TINY_BACKBONES[family]['type'])
    for method in METHODS:
        knobs = resolve_pe_cfg(dict(method=method), cls.pe_preset_overrides)
        backbone = build(backbone_cfg(family, method))
        assert knobs['method'] == backbone.pe_method
        assert (knobs['last_norm_pos'] is not None) == (
            backbone.pe.last_pos_norm is not None)
