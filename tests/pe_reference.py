"""Plain re-implementations shared by the CeiT and ViT-Lite tests.

Written from the paper's equations and the official code's forward passes,
on state dicts with the *official* parameter names, so the models under
test are checked through their converters against code that shares
nothing with them.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


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


def randomised(model, seed=0):
    """Every parameter random (no identity LNs, no zero biases) and BN
    statistics random but valid, so no swapped tensor goes unnoticed."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(('ln1.weight', 'ln2.weight', 'norm.weight',
                              'bn.weight')) or 'bn' in name:
                param.normal_(1.0, 0.2)
            else:
                param.normal_(0, 0.1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    model.eval()
    return model


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def optimizer_groups(model, optim_wrapper_cfg):
    """{parameter name: its param group} as the config's optimizer builds
    them."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        wrapper = build_optim_wrapper(model, optim_wrapper_cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: group for group in wrapper.optimizer.param_groups
            for p in group['params']}
