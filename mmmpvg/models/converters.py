"""Convert timm / official DeiT / official LaPE / mmpretrain weights to
PEVisionTransformer.

:func:`read_vit_checkpoint` reads any of those files (released weights or
training checkpoints, with ``torch.load(weights_only=True)``) into timm's
names; :func:`convert_deit_state_dict` maps timm's names onto ours. Only
names change, except where the target structure has no place for a tensor:
a class-token checkpoint loaded into a GAP model loses its class token and
the class row of ``pos_embed``; a LaPE checkpoint loaded into PVG/MPVG loses
layer 0's PE norm. Every such change is reported.
"""
import argparse
import math
import pickle
import re
import zipfile
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

# mmpretrain VisionTransformer / mmmpvg PEVisionTransformer classifier name
# -> timm name
_FROM_MMPRETRAIN = [
    (r'^backbone\.patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^backbone\.layers\.(\d+)\.ln1\.', r'blocks.\1.norm1.'),
    (r'^backbone\.layers\.(\d+)\.ln2\.', r'blocks.\1.norm2.'),
    (r'^backbone\.layers\.(\d+)\.attn\.', r'blocks.\1.attn.'),
    (r'^backbone\.layers\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.mlp.fc1.'),
    (r'^backbone\.layers\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.mlp.fc2.'),
    (r'^backbone\.pe\.layer_norms\.(\d+)\.', r'blocks.\1.pe_norm.'),
    (r'^backbone\.(ln1|last_norm)\.', 'norm.'),
    (r'^backbone\.(pe\.)?pos_embed$', 'pos_embed'),
    (r'^backbone\.(cls_token|dist_token)$', r'\1'),
    (r'^head\.(layers\.head|fc)\.', 'head.'),
]
# What official DeiT / LaPE training checkpoints hold besides tensors.
TRAINING_CHECKPOINT_GLOBALS = [argparse.Namespace]


def _load_safely(path: str) -> dict:
    from mmmpvg.engine.checkpoint_loading import mmengine_checkpoint_globals
    if not zipfile.is_zipfile(path):
        raise ValueError(f'{path} is not a PyTorch checkpoint (torch.save '
                         'writes a zip archive); expected timm, official '
                         'DeiT/LaPE or mmpretrain weights.')
    try:
        with mmengine_checkpoint_globals(), \
                torch.serialization.safe_globals(TRAINING_CHECKPOINT_GLOBALS):
            checkpoint = torch.load(path, map_location='cpu',
                                    weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f'{path} holds pickled objects that neither timm, official '
            'DeiT/LaPE nor mmpretrain checkpoints contain '
            f'({str(error).splitlines()[0]}); refusing to unpickle them.'
        ) from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not '
                         'a state dict or checkpoint dict.')
    return checkpoint


def read_vit_checkpoint(path: str,
                        use_ema: bool = False) -> Tuple[dict, str]:
    """Read a ViT/DeiT checkpoint of any known layout into timm's names.

    Layouts: timm (bare state dict), official DeiT/LaPE (``model``, and in
    training checkpoints ``model_ema``, ``optimizer``, ``args``, ...),
    mmpretrain / mmmpvg (``state_dict`` with ``backbone.`` / ``head.``
    keys, ``ema_state_dict`` with EMAHook).

    Returns:
        The timm-named state dict and a description of the source.
    """
    checkpoint = _load_safely(path)
    if 'state_dict' in checkpoint or 'ema_state_dict' in checkpoint:
        kind = 'mmpretrain'
        key = 'ema_state_dict' if use_ema else 'state_dict'
    elif 'model' in checkpoint:
        kind = 'official DeiT/LaPE'
        key = 'model_ema' if use_ema else 'model'
    else:
        kind, key = 'timm', None
        if use_ema:
            raise ValueError(f'{path} is a bare timm state dict: it holds '
                             'no EMA weights.')
    if key is not None and not isinstance(checkpoint.get(key), dict):
        raise ValueError(f'{path} ({kind} layout) has no {key!r} entry'
                         + (': it was trained without EMA.' if use_ema
                            else '.'))
    state = checkpoint if key is None else checkpoint[key]
    if kind == 'mmpretrain':
        state = {re.sub(r'^module\.', '', k): v for k, v in state.items()
                 if k != 'steps'}  # EMAHook's counter
        renamed = {}
        for name, value in state.items():
            for pattern, replacement in _FROM_MMPRETRAIN:
                new_name, hits = re.subn(pattern, replacement, name)
                if hits:
                    renamed[new_name] = value
                    break
            else:
                if name.startswith('backbone.'):
                    raise ValueError(
                        f'{path}: {name!r} is not part of an mmpretrain '
                        'VisionTransformer or mmmpvg PEVisionTransformer; '
                        'expected a DeiT/ViT classifier checkpoint.')
        state = renamed
    if not isinstance(state.get('pos_embed'), torch.Tensor) or \
            not any(k.startswith('blocks.') for k in state):
        sample = sorted(state)[:5]
        raise ValueError(
            f'{path} ({kind} layout) holds no DeiT/ViT weights (no '
            f'pos_embed and blocks.*; keys start with {sample}); expected '
            'timm, official DeiT/LaPE or mmpretrain ViT weights.')
    return state, kind


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
