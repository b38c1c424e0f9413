"""Plain re-implementations shared by the CeiT and ViT-Lite tests.

Written from the paper's equations and the official code's forward passes,
on state dicts with the *official* parameter names, so the models under
test are checked through their converters against code that shares
nothing with them; and the checks both run with them.
"""
import os.path as osp
import subprocess
import sys

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def method_rules(method, num_layers, pe_in_layer0):
    """The paper's rules (Table 5 / §Method), written out per method:
    class token?, PE added to the input?, layers with a PE LayerNorm,
    Eq. 11 term?  ``pe_in_layer0``: PVG/MPVG put a PE LN in layer 0 (Swin;
    CeiT by this project's decision)."""
    all_layers = list(range(num_layers))
    gap_layers = all_layers if pe_in_layer0 else all_layers[1:]
    return {
        'default': dict(cls=True, add=True, layers=[], last=False),
        'lape': dict(cls=True, add=False, layers=all_layers, last=False),
        'pvg': dict(cls=False, add=True, layers=gap_layers, last=False),
        'mpvg': dict(cls=False, add=True, layers=gap_layers, last=True),
    }[method]


def random_pe_norms(rules, dims, generator):
    """Random affine parameters of LN'_l for the rule's layers and LN''."""
    def affine():
        return (1 + 0.3 * torch.randn(dims, generator=generator),
                0.3 * torch.randn(dims, generator=generator))
    norms = {layer: affine() for layer in rules['layers']}
    last = affine() if rules['last'] else None
    return norms, last


def load_pe_norms(backbone, norms, last):
    with torch.no_grad():
        for layer, (weight, bias) in norms.items():
            backbone.pe.layer_norms[str(layer)].weight.copy_(weight)
            backbone.pe.layer_norms[str(layer)].bias.copy_(bias)
        if last is not None:
            backbone.pe.last_pos_norm.weight.copy_(last[0])
            backbone.pe.last_pos_norm.bias.copy_(last[1])


def pe_chain(pos, norms, num_layers, eps):
    """pe_l = LN'_l(pe_{l'}) along the layers that have a norm (Eq. 9),
    starting from pos_0; None where a layer gets no PE."""
    chain, current = [], pos
    for layer in range(num_layers):
        if layer in norms:
            current = F.layer_norm(current, current.shape[-1:],
                                   *norms[layer], eps)
            chain.append(current)
        else:
            chain.append(None)
    return chain


def attention(x, qkv_weight, qkv_bias, proj_weight, proj_bias, heads,
              query_rows=None):
    """softmax(q k^T / sqrt(d)) v with q, k, v from one qkv projection;
    ``query_rows`` keeps only those query rows (CeiT's LCA: the last)."""
    batch, tokens, dims = x.shape
    qkv = F.linear(x, qkv_weight, qkv_bias).reshape(
        batch, tokens, 3, heads, dims // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv
    if query_rows is not None:
        q = q[:, :, query_rows]
    weights = (q @ k.transpose(-2, -1) * (dims // heads) ** -0.5).softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, -1, dims)
    return F.linear(out, proj_weight, proj_bias)


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def tiny_optimizer_groups(config, backbone, num_classes):
    """The model of ``config`` with a tiny ``backbone`` and {parameter
    name: its param group} as the config's optimizer builds them."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(config)
    cfg.model.backbone.update(backbone)
    model = MODELS.build(dict(cfg.model, train_cfg=None, head=dict(
        cfg.model.head, num_classes=num_classes,
        in_channels=backbone['arch']['embed_dims'])))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    return model, {names[id(p)]: group
                   for group in wrapper.optimizer.param_groups
                   for p in group['params']}


class RandomState:
    """Random tensors under the official code's names, in ``state``."""

    def __init__(self, seed=0):
        self.generator = torch.Generator().manual_seed(seed)
        self.state = {}

    def rand(self, *shape, mean=0.0):
        return mean + 0.1 * torch.randn(*shape, generator=self.generator)

    def norm(self, prefix, dims):
        self.state[prefix + '.weight'] = self.rand(dims, mean=1.0)
        self.state[prefix + '.bias'] = self.rand(dims)

    def batch_norm(self, prefix, dims):
        self.norm(prefix, dims)
        self.state[prefix + '.running_mean'] = self.rand(dims)
        self.state[prefix + '.running_var'] = 0.5 + torch.rand(
            dims, generator=self.generator)
        self.state[prefix + '.num_batches_tracked'] = torch.tensor(7)

    def linear(self, prefix, out, inp, *kernel, bias=True):
        self.state[prefix + '.weight'] = self.rand(out, inp, *kernel)
        if bias:
            self.state[prefix + '.bias'] = self.rand(out)


def official_tokens(x, cls_token, pos, rules):
    """Patch tokens with the class token in front (without one, pos_0's
    class row dropped) and pos_0 added unless the method does not; and
    pos_0 as the PE chain starts from it."""
    if rules['cls']:
        x = torch.cat([cls_token.expand(len(x), -1, -1), x], 1)
    else:
        pos = pos[:, 1:]
    return (x + pos if rules['add'] else x), pos


def with_pe(tokens, pe):
    """``tokens + pe_l`` where layer l gets a PE."""
    return tokens if pe is None else tokens + pe


def new_pe_norm_keys(rules):
    """Keys of the PE norms (LN'_l, LN'') that no official checkpoint has:
    the converter leaves them to the model's init."""
    norms = [f'layer_norms.{layer}' for layer in rules['layers']]
    norms += ['last_pos_norm'] if rules['last'] else []
    return sorted(f'backbone.pe.{norm}.{w}' for norm in norms
                  for w in ('weight', 'bias'))


def load_converted(model, converted, rules):
    """Load an official checkpoint ``converted``: nothing unexpected, only
    the new PE norms missing."""
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert unexpected == []
    assert sorted(missing) == new_pe_norm_keys(rules)


def assert_converted_logits(model, convert, state, rules, images, reference,
                            seed=1):
    """``model`` with the official ``state`` through ``convert`` (the new
    PE norms random) gives the logits of ``reference(state, images, rules,
    norms, last_norm)``; returns the converter's notes."""
    converted, notes = convert(state, dict(method=model.backbone.pe_method),
                               'cls' if rules['cls'] else 'avg')
    load_converted(model, converted, rules)
    generator = torch.Generator().manual_seed(seed)
    norms, last = random_pe_norms(rules, model.backbone.pe.layer_dims[-1],
                                  generator)
    load_pe_norms(model.backbone, norms, last)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(images, mode='tensor'),
            reference(state, images, rules, norms, last), rtol=1e-4,
            atol=1e-5)
    return notes


class Seen(dict):
    """What forward hooks saw, by name."""

    def output(self, name):
        return lambda module, args, output: self.__setitem__(name, output)

    def input(self, name):
        return lambda module, args: self.__setitem__(name, args[0])


def hook_attention_inputs(backbone):
    """Hooks on the patch embedding and every layer's input, ``ln1`` and
    attention input; ``Seen`` fills in each forward."""
    seen = Seen()
    backbone.patch_embed.register_forward_hook(seen.output('patches'))
    for i, layer in enumerate(backbone.layers):
        layer.register_forward_pre_hook(seen.input(f'x{i}'))
        layer.ln1.register_forward_hook(seen.output(f'ln1_{i}'))
        layer.attn.register_forward_pre_hook(seen.input(f'attn_in{i}'))
    return seen


def assert_pe_at_attention(seen, backbone, rules, eps):
    """x_0 gets pos_0 only when the method adds it; layer l's attention sees
    ``ln1(x_l) + pe_l``, pe_l the LN chain on pos_0 (None: no PE)."""
    assert backbone.pe.layers_with_pe() == rules['layers']
    norms = {int(k): (n.weight, n.bias)
             for k, n in backbone.pe.layer_norms.items()}
    pos, tokens = backbone.pos_embed, seen['patches'][0]
    if rules['cls']:
        tokens = torch.cat(
            [backbone.cls_token.expand(len(tokens), -1, -1), tokens], 1)
    torch.testing.assert_close(seen['x0'],
                               tokens + pos if rules['add'] else tokens)
    chain = pe_chain(pos, norms, len(backbone.layers), eps)
    for i, pe in enumerate(chain):
        torch.testing.assert_close(seen[f'attn_in{i}'],
                                   with_pe(seen[f'ln1_{i}'], pe))


def assert_converter_script_output_loads(script, state, tmp_path, model,
                                         method, rules):
    """``tools/model_converters/<script>`` on ``state`` saved as an official
    checkpoint, for ``method``, names the new PE norms, and ``model`` loads
    what it writes with only those missing."""
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save({'model': state}, src)
    result = subprocess.run(
        [sys.executable, osp.join('tools', 'model_converters', script),
         str(src), str(dst), '--pe-method', method],
        cwd=REPO, capture_output=True, text=True, check=True)
    layers = rules['layers']
    assert f'PE norms of layers {layers[0]}..{layers[-1]} are new' in \
        result.stdout
    load_converted(model, torch.load(dst, weights_only=True)['state_dict'],
                   rules)
