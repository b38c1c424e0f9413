"""Convert timm / official DeiT / official LaPE weights to PEVisionTransformer.

Only names change, except where the target structure has no place for a
tensor: a class-token checkpoint loaded into a GAP model loses its class
token and the class row of ``pos_embed``; a LaPE checkpoint loaded into
PVG/MPVG loses layer 0's PE norm. Every such change is reported.
"""
import math
import re
from typing import Dict, List, Optional, Tuple

import torch

from .position_embedding import resolve_pe_cfg

# timm / DeiT name -> PEVisionTransformer name (within the backbone)
_RENAMES = [
    (r'^patch_embed\.proj\.', 'patch_embed.projection.'),
    (r'^blocks\.(\d+)\.norm1\.', r'layers.\1.ln1.'),
    (r'^blocks\.(\d+)\.norm2\.', r'layers.\1.ln2.'),
    (r'^blocks\.(\d+)\.attn\.', r'layers.\1.attn.'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.', r'layers.\1.ffn.layers.0.0.'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.', r'layers.\1.ffn.layers.1.'),
    (r'^blocks\.(\d+)\.pe_norm\.', r'pe.layer_norms.\1.'),
    (r'^norm\.', 'last_norm.'),
    (r'^pos_embed$', 'pe.pos_embed'),
    (r'^cls_token$', 'cls_token'),
]
_DISTILLATION_KEYS = ('dist_token', 'head_dist.weight', 'head_dist.bias')


def _num_prefix_tokens(pos_embed: torch.Tensor) -> int:
    rows = pos_embed.shape[1]
    for extra in (0, 1, 2):
        side = math.isqrt(rows - extra)
        if side * side == rows - extra:
            return extra
    raise ValueError(f'pos_embed with {rows} rows is not a square patch grid '
                     'plus 0-2 extra tokens.')


def convert_deit_state_dict(
        state_dict: Dict[str, torch.Tensor],
        pe_cfg: Optional[dict],
        global_pool: str,
        head_key: str = 'head.layers.head',
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map a timm/DeiT/LaPE ``state_dict`` onto an mmpretrain classifier.

    Args:
        state_dict: Source weights (timm names; ``model`` already unwrapped).
        pe_cfg: Target PE config, e.g. ``dict(method='mpvg')``.
        global_pool: Target pooling, ``'cls'`` or ``'avg'``.
        head_key: Where the classifier's Linear lives in the mmpretrain
            model (``head.layers.head`` for VisionTransformerClsHead,
            ``head.fc`` for LinearClsHead).

    Returns:
        The converted state dict (``backbone.*`` and ``head_key.*``) and the
        notes on what was dropped or left at initialisation.
    """
    notes = []
    depth = 1 + max(int(m.group(1)) for k in state_dict
                    if (m := re.match(r'blocks\.(\d+)\.', k)))
    knobs = resolve_pe_cfg(pe_cfg, depth, with_cls_token=global_pool == 'cls')
    first = 0 if knobs['include_layer0'] else 1
    target_pe_layers = set(range(first, depth)) if knobs['layerwise'] else set()

    source_extra = _num_prefix_tokens(state_dict['pos_embed'])
    target_extra = 1 if global_pool == 'cls' else 0
    if source_extra < target_extra:
        raise ValueError('The checkpoint has no class token, so it cannot '
                         "initialise a global_pool='cls' model.")

    converted = {}
    for key, value in state_dict.items():
        if key in _DISTILLATION_KEYS:
            notes.append(f'dropped {key}: distillation token/head have no '
                         'place in this model')
            continue
        if key.startswith('head.'):
            converted[head_key + key[len('head'):]] = value
            continue
        if key == 'cls_token' and target_extra == 0:
            notes.append('dropped cls_token: the target uses global average '
                         'pooling')
            continue
        if key == 'pos_embed' and source_extra != target_extra:
            value = torch.cat([value[:, :target_extra],
                               value[:, source_extra:]], dim=1)
            notes.append(f'pos_embed: dropped {source_extra - target_extra} '
                         'extra-token row(s) (class/distillation) to match '
                         'the target')
        match = re.match(r'blocks\.(\d+)\.pe_norm\.', key)
        if match and int(match.group(1)) not in target_pe_layers:
            notes.append(f'dropped {key}: layer {match.group(1)} receives no '
                         f"PE in method {knobs['method']!r}")
            continue
        for pattern, replacement in _RENAMES:
            new_key, hits = re.subn(pattern, replacement, key)
            if hits:
                converted['backbone.' + new_key] = value
                break
        else:
            raise KeyError(f'Unexpected key {key!r}: not a timm/DeiT/LaPE '
                           'vision transformer checkpoint?')

    missing_pe = sorted(layer for layer in target_pe_layers
                        if f'backbone.pe.layer_norms.{layer}.weight'
                        not in converted)
    if missing_pe:
        notes.append(f"PE norms of layers {missing_pe} are new in method "
                     f"{knobs['method']!r}: left at initialisation")
    if knobs['last_norm_pos'] is not None:
        notes.append('pe.last_pos_norm (PE term of the Last LN) is new: '
                     'left at initialisation')
    return converted, notes
