"""Convert timm / official / mmpretrain weights to the mmmpvg backbones.

DeiT (timm / official DeiT / official LaPE / mmpretrain ->
PEVisionTransformer): :func:`read_vit_checkpoint` reads any of those files
(released weights or training checkpoints, with
``torch.load(weights_only=True)``) into timm's names;
:func:`convert_deit_state_dict` maps timm's names onto ours. Only
names change, except where the target structure has no place for a tensor:
a class-token checkpoint loaded into a GAP model loses its class token and
the class row of ``pos_embed``; a LaPE checkpoint loaded into PVG/MPVG loses
layer 0's PE norm. Every such change is reported.

Swin (timm / official microsoft Swin -> PESwinTransformer, i.e. mmpretrain's
Swin names): names change, and each PatchMerging's 4C channels are reordered
from the 2x2 concatenation (x0, x1, x2, x3) to mmcv's ``nn.Unfold`` order.

T2T-ViT (official yitu-opensource Performer T2T-ViT -> PET2TViT, i.e.
mmpretrain's T2T_ViT names): the stem keeps the official names, the blocks
take mmpretrain's; the class-token row of the sinusoidal ``pos_embed`` is
dropped for a GAP target, as for DeiT.

CeiT (official coeusguo/ceit -> PECeiT) and ViT-Lite (SHI-Labs
Compact-Transformers -> PEViTLite): only names change; a GAP target
(PVG/MPVG) loses the class token and the class row of the PE.
"""
import argparse
import contextlib
import math
import pickle
import re
import zipfile
from typing import Dict, List, Optional, Tuple

import torch

from .backbones.pe_ceit import PECeiT
from .backbones.pe_swin_transformer import PESwinTransformer
from .position_embedding import PE_METHODS, resolve_pe_cfg

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


def load_checkpoint_safely(path: str) -> dict:
    """``torch.load`` with ``weights_only=True`` of a checkpoint to convert:
    tensors, MMEngine's own types and the ``argparse.Namespace`` that
    official DeiT/LaPE/T2T training checkpoints save. Anything else is one
    ``ValueError`` naming the file."""
    from mmmpvg.engine.checkpoint_loading import mmengine_checkpoint_globals
    if not zipfile.is_zipfile(path):
        raise ValueError(f'{path} is not a PyTorch checkpoint (torch.save '
                         'writes a zip archive); expected the weights of a '
                         'model to convert.')
    try:
        with mmengine_checkpoint_globals(), \
                torch.serialization.safe_globals(TRAINING_CHECKPOINT_GLOBALS):
            checkpoint = torch.load(path, map_location='cpu',
                                    weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f'{path} holds pickled objects that neither timm, the official '
            'codes nor mmpretrain checkpoints contain '
            f'({str(error).splitlines()[0]}); refusing to unpickle them.'
        ) from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path} holds a {type(checkpoint).__name__}, not '
                         'a state dict or checkpoint dict.')
    return checkpoint


def unwrapped_weights(path: str) -> dict:
    """The weights of a checkpoint read safely, out of a ``model``,
    ``state_dict`` or ``model_ema`` wrapper if there is one."""
    checkpoint = load_checkpoint_safely(path)
    for wrapper in ('model', 'state_dict', 'model_ema'):
        if isinstance(checkpoint.get(wrapper), dict):
            return checkpoint[wrapper]
    return checkpoint


def save_converted(dst: str, state_dict: dict, notes: List[str], **meta):
    """Report the conversion notes and write ``dst`` as an mmengine
    checkpoint (loads with ``load_from=`` or a ``Pretrained`` init)."""
    for note in notes:
        print(f'note: {note}')
    torch.save(dict(state_dict=state_dict, meta=meta), dst)
    print(f'wrote {len(state_dict)} tensors to {dst}')


def converter_arg_parser(
        doc: str, src_help: str, head_key: str = 'head.fc',
        head_key_help: str = 'mmpretrain name of the classifier Linear '
        '(LinearClsHead: head.fc)') -> argparse.ArgumentParser:
    """The arguments every ``tools/model_converters`` script takes: source,
    destination, target PE method and head name; scripts add their own."""
    parser = argparse.ArgumentParser(description=doc.split('\n')[0])
    parser.add_argument('src', help=src_help)
    parser.add_argument('dst', help='where to write the mmmpvg checkpoint')
    parser.add_argument('--pe-method', default='default',
                        choices=sorted(PE_METHODS))
    parser.add_argument('--head-key', default=head_key, help=head_key_help)
    return parser


@contextlib.contextmanager
def exit_on_bad_checkpoint():
    """For converter scripts: a checkpoint that cannot be read or converted
    ends the script with one ``error:`` line instead of a traceback."""
    try:
        yield
    except (ValueError, KeyError) as error:
        raise SystemExit(f'error: {error}') from None


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
    checkpoint = load_checkpoint_safely(path)
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


# timm / official Swin name -> PESwinTransformer name (within the backbone)
_SWIN_RENAMES = [
    (r'^patch_embed\.proj\.', 'patch_embed.projection.'),
    (r'^patch_embed\.norm\.', 'patch_embed.norm.'),
    (r'^absolute_pos_embed$', 'absolute_pos_embed'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.(norm[12])\.',
     r'stages.\1.blocks.\2.\3.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.attn\.',
     r'stages.\1.blocks.\2.attn.w_msa.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.',
     r'stages.\1.blocks.\2.ffn.layers.0.0.'),
    (r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.',
     r'stages.\1.blocks.\2.ffn.layers.1.'),
]


def _unfold_order(merged: torch.Tensor) -> torch.Tensor:
    """PatchMerging's input channels from (x0, x1, x2, x3) x C to mmcv's
    C x (top-left, top-right, bottom-left, bottom-right) order.

    x0..x3 are the (row, col) offsets (0,0), (1,0), (0,1), (1,1).
    """
    rows = merged.shape[0] if merged.dim() == 2 else 1
    parts = merged.reshape(rows, 4, -1)[:, [0, 2, 1, 3]]
    return parts.transpose(1, 2).reshape(merged.shape)


def window_relative_position_index(window: int) -> torch.Tensor:
    """The official Swin (Wh*Ww, Wh*Ww) index into the relative bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window),
                                        torch.arange(window), indexing='ij'))
    coords = coords.flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    relative = relative + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


def convert_swin_state_dict(
        state_dict: Dict[str, torch.Tensor],
        pe_cfg: Optional[dict],
        head_key: str = 'head.fc',
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map a timm / official Swin ``state_dict`` onto an mmpretrain classifier
    with a :class:`PESwinTransformer` backbone.

    timm puts stage s's PatchMerging at the start of stage s + 1
    (``layers.{s+1}.downsample``) and names the classifier ``head.fc``; the
    official code keeps it at the end of stage s (``layers.{s}.downsample``)
    and names it ``head``. Both are recognised. Attention masks are dropped
    (mmpretrain builds them per input); ``relative_position_index`` is taken
    from the checkpoint, or written from the official definition where timm
    left it out.

    Returns:
        The converted state dict (``backbone.*`` and ``head_key.*``) and the
        notes on what was dropped or left at initialisation.
    """
    notes = []
    depths = {}
    for key in state_dict:
        if (m := re.match(r'layers\.(\d+)\.blocks\.(\d+)\.', key)):
            stage, block = int(m.group(1)), int(m.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
    if not depths:
        raise KeyError('No layers.<s>.blocks.<b> keys: not a timm/official '
                       'Swin checkpoint?')
    num_stages = len(depths)
    official = 'layers.0.downsample.reduction.weight' in state_dict
    knobs = resolve_pe_cfg(pe_cfg, sum(depths.values()), False,
                           PESwinTransformer.PE_PRESET_OVERRIDES)

    converted = {}
    for key, value in state_dict.items():
        if key.endswith('attn_mask'):
            continue
        if key.startswith('head.'):
            suffix = key[len('head.fc'):] if key.startswith('head.fc.') \
                else key[len('head'):]
            converted[head_key + suffix] = value
            continue
        if key.startswith('norm.'):
            converted[f'backbone.norm{num_stages - 1}.' +
                      key[len('norm.'):]] = value
            continue
        if (m := re.match(r'layers\.(\d+)\.downsample\.(norm|reduction)\.'
                          r'(weight|bias)$', key)):
            stage = int(m.group(1)) - (0 if official else 1)
            converted[f'backbone.stages.{stage}.downsample.{m.group(2)}.'
                      f'{m.group(3)}'] = _unfold_order(value)
            continue
        for pattern, replacement in _SWIN_RENAMES:
            new_key, hits = re.subn(pattern, replacement, key)
            if hits:
                converted['backbone.' + new_key] = value
                break
        else:
            raise KeyError(f'Unexpected key {key!r}: not a timm/official '
                           'Swin checkpoint?')

    for stage, depth in depths.items():
        for block in range(depth):
            prefix = f'backbone.stages.{stage}.blocks.{block}.attn.w_msa.'
            if prefix + 'relative_position_index' in converted:
                continue
            table = converted[prefix + 'relative_position_bias_table']
            window = (math.isqrt(table.shape[0]) + 1) // 2
            converted[prefix + 'relative_position_index'] = \
                window_relative_position_index(window)
    if 'backbone.absolute_pos_embed' not in converted:
        notes.append('absolute_pos_embed is not in the checkpoint (timm '
                     'builds Swin without it): left at initialisation')
    if knobs['layerwise']:
        first = 0 if knobs['include_layer0'] else 1
        notes.append(f'PE norms of layers {first}..{sum(depths.values()) - 1}'
                     f" are new in method {knobs['method']!r}: left at "
                     'initialisation')
    if knobs['last_norm_pos'] is not None:
        notes.append('pe.last_pos_norm (PE term of the Last LN) is new: '
                     'left at initialisation')
    return converted, notes


# official T2T-ViT name -> PET2TViT name (within the backbone)
_T2T_RENAMES = [
    (r'^tokens_to_token\.(attention[12]\.(w|(kqv|proj|norm1|norm2|mlp\.0|'
     r'mlp\.2)\.(weight|bias))|project\.(weight|bias))$',
     r'tokens_to_token.\1'),
    (r'^blocks\.(\d+)\.norm1\.', r'encoder.\1.ln1.'),
    (r'^blocks\.(\d+)\.norm2\.', r'encoder.\1.ln2.'),
    (r'^blocks\.(\d+)\.attn\.(qkv|proj)\.', r'encoder.\1.attn.\2.'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.', r'encoder.\1.ffn.layers.0.0.'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.', r'encoder.\1.ffn.layers.1.'),
    (r'^norm\.', 'norm.'),
    (r'^pos_embed$', 'pe.pos_embed'),
    (r'^cls_token$', 'cls_token'),
]


def t2t_checkpoint_weights(checkpoint: dict,
                           use_ema: bool = True) -> Dict[str, torch.Tensor]:
    """The weights in an official T2T-ViT (timm) checkpoint, as the
    official ``load_state_dict`` picks them: ``state_dict_ema`` when asked
    and present, else ``state_dict``, else the dict itself; ``module.``
    (DataParallel) prefixes stripped."""
    key = 'state_dict_ema' if use_ema and 'state_dict_ema' in checkpoint \
        else 'state_dict'
    weights = checkpoint.get(key, checkpoint)
    return {k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in weights.items()}


def convert_t2t_state_dict(
        state_dict: Dict[str, torch.Tensor],
        pe_cfg: Optional[dict],
        with_cls_token: bool = True,
        head_key: str = 'head.layers.head',
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map an official (Performer) T2T-ViT ``state_dict`` onto an mmpretrain
    classifier with a :class:`PET2TViT` backbone.

    Args:
        state_dict: Official weights (see :func:`t2t_checkpoint_weights`).
        pe_cfg: Target PE config, e.g. ``dict(method='mpvg')``.
        with_cls_token: Whether the target has a class token (Default and
            LaPE) or pools globally (PVG and MPVG).
        head_key: Where the classifier's Linear lives in the mmpretrain
            model.

    Returns:
        The converted state dict and the notes on what was dropped or left
        at initialisation.
    """
    notes = []
    blocks = [int(m.group(1)) for k in state_dict
              if (m := re.match(r'blocks\.(\d+)\.', k))]
    if not blocks:
        raise KeyError('No blocks.<i> keys: not an official T2T-ViT '
                       'checkpoint?')
    if any(k.startswith('tokens_to_token.attention1.attn.')
           for k in state_dict):
        raise KeyError('This is a transformer-stem T2T-ViT_t checkpoint; '
                       'PET2TViT converts the Performer stem only.')
    knobs = resolve_pe_cfg(pe_cfg, max(blocks) + 1, with_cls_token)

    converted = {}
    for key, value in state_dict.items():
        if key.startswith('head.'):
            converted[head_key + key[len('head'):]] = value
            continue
        if key == 'cls_token' and not with_cls_token:
            notes.append('dropped cls_token: the target uses global average '
                         'pooling')
            continue
        if key == 'pos_embed' and not with_cls_token:
            value = value[:, 1:]
            notes.append('pos_embed: dropped the class-token row to match '
                         'the target')
        for pattern, replacement in _T2T_RENAMES:
            new_key, hits = re.subn(pattern, replacement, key)
            if hits:
                converted['backbone.' + new_key] = value
                break
        else:
            raise KeyError(f'Unexpected key {key!r}: not an official '
                           'T2T-ViT checkpoint?')
    if knobs['layerwise']:
        first = 0 if knobs['include_layer0'] else 1
        notes.append(f'PE norms of layers {first}..{max(blocks)} are new in '
                     f"method {knobs['method']!r}: left at initialisation")
    if knobs['last_norm_pos'] is not None:
        notes.append('pe.last_pos_norm (PE term of the Last LN) is new: '
                     'left at initialisation')
    return converted, notes


def _rename_all(state_dict: Dict[str, torch.Tensor], renames, what: str,
                skip=()) -> Dict[str, torch.Tensor]:
    converted = {}
    for key, value in state_dict.items():
        if key in skip:
            continue
        for pattern, replacement in renames:
            new_key, hits = re.subn(pattern, replacement, key)
            if hits:
                converted[new_key] = value
                break
        else:
            raise KeyError(f'Unexpected key {key!r}: not {what} checkpoint?')
    return converted


def _drop_class_token(converted: Dict[str, torch.Tensor], cls_key: str,
                      pos_key: str, notes: List[str]):
    """A class-token checkpoint in a GAP model: no class token, no class
    row of the PE."""
    del converted[cls_key]
    converted[pos_key] = converted[pos_key][:, 1:]
    notes.append('dropped the class token and the class row of the PE: '
                  'the target uses global average pooling')


def _new_pe_notes(knobs: dict, num_layers: int) -> List[str]:
    notes = []
    if knobs['layerwise']:
        first = 0 if knobs['include_layer0'] else 1
        notes.append(f'PE norms of layers {first}..{num_layers - 1} are new '
                     f"in method {knobs['method']!r}: left at "
                     'initialisation')
    if knobs['last_norm_pos'] is not None:
        notes.append('pe.last_pos_norm (PE term of the Last LN) is new: '
                     'left at initialisation')
    return notes


# official coeusguo/ceit name -> mmpretrain classifier with PECeiT
_CEIT_RENAMES = [
    (r'^i2t\.backbone\.(conv|bn)\.', r'backbone.stem.\1.'),
    (r'^i2t\.proj\.', 'backbone.patch_embed.projection.'),
    (r'^cls_token$', 'backbone.cls_token'),
    (r'^pos_embed$', 'backbone.pe.pos_embed'),
    (r'^blocks\.(\d+)\.norm([12])\.', r'backbone.layers.\1.ln\2.'),
    (r'^blocks\.(\d+)\.(attn|leff)\.', r'backbone.layers.\1.\2.'),
    (r'^lca\.norm([12])\.', r'backbone.lca.ln\1.'),
    (r'^lca\.attn\.', 'backbone.lca.attn.'),
    (r'^lca\.feedforward\.fc1\.', 'backbone.lca.ffn.layers.0.0.'),
    (r'^lca\.feedforward\.fc2\.', 'backbone.lca.ffn.layers.1.'),
    (r'^pos_layer_embed$', 'backbone.pos_layer_embed'),
    (r'^norm\.', 'backbone.last_norm.'),
]


def convert_ceit_state_dict(
        state_dict: Dict[str, torch.Tensor],
        pe_cfg: Optional[dict],
        global_pool: str = 'cls',
        head_key: str = 'head.fc',
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map an official CeiT ``state_dict`` onto an mmpretrain classifier
    with a :class:`PECeiT` backbone.

    Only names change (BatchNorm statistics included), except that a GAP
    target (PVG/MPVG) drops the class token and its PE row.

    Returns:
        The converted state dict (``backbone.*`` and ``head_key.*``) and the
        notes on what was dropped or left at initialisation.
    """
    depth = 1 + max((int(m.group(1)) for k in state_dict
                     if (m := re.match(r'blocks\.(\d+)\.', k))), default=-1)
    if depth == 0 or 'pos_layer_embed' not in state_dict:
        raise KeyError('No blocks.<i> / pos_layer_embed keys: not an '
                       'official CeiT checkpoint?')
    knobs = resolve_pe_cfg(pe_cfg, depth, global_pool == 'cls',
                           PECeiT.PE_PRESET_OVERRIDES)
    renames = _CEIT_RENAMES + [(r'^head\.', head_key + '.')]
    converted = _rename_all(state_dict, renames, 'an official CeiT')
    notes = []
    if global_pool == 'avg':
        _drop_class_token(converted, 'backbone.cls_token',
                          'backbone.pe.pos_embed', notes)
    return converted, notes + _new_pe_notes(knobs, depth)


# SHI-Labs/Compact-Transformers ViT-Lite name -> classifier with PEViTLite
_VIT_LITE_RENAMES = [
    (r'^tokenizer\.conv_layers\.0\.0\.', 'backbone.patch_embed.projection.'),
    (r'^classifier\.class_emb$', 'backbone.cls_token'),
    (r'^classifier\.positional_emb$', 'backbone.pe.pos_embed'),
    (r'^classifier\.blocks\.(\d+)\.pre_norm\.', r'backbone.layers.\1.ln1.'),
    (r'^classifier\.blocks\.(\d+)\.self_attn\.', r'backbone.layers.\1.attn.'),
    (r'^classifier\.blocks\.(\d+)\.norm1\.', r'backbone.layers.\1.ln2.'),
    (r'^classifier\.blocks\.(\d+)\.linear1\.',
     r'backbone.layers.\1.ffn.layers.0.0.'),
    (r'^classifier\.blocks\.(\d+)\.linear2\.',
     r'backbone.layers.\1.ffn.layers.1.'),
    (r'^classifier\.norm\.', 'backbone.last_norm.'),
]


def convert_vit_lite_state_dict(
        state_dict: Dict[str, torch.Tensor],
        pe_cfg: Optional[dict],
        global_pool: str = 'cls',
        head_key: str = 'head.fc',
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map a Compact-Transformers ViT-Lite ``state_dict`` (``vit_*_*_*``,
    learnable or sine PE) onto an mmpretrain classifier with a
    :class:`PEViTLite` backbone.

    A sine-PE checkpoint's table becomes the initial value of the learnable
    PE. CCT checkpoints (sequence pooling, convolutional tokenizer) have no
    place here and are refused.
    """
    if 'classifier.attention_pool.weight' in state_dict:
        raise KeyError('classifier.attention_pool: a CCT (sequence pooling) '
                       'checkpoint, not ViT-Lite.')
    depth = 1 + max((int(m.group(1)) for k in state_dict
                     if (m := re.match(r'classifier\.blocks\.(\d+)\.', k))),
                    default=-1)
    if depth == 0:
        raise KeyError('No classifier.blocks.<i> keys: not a '
                       'Compact-Transformers ViT-Lite checkpoint?')
    knobs = resolve_pe_cfg(pe_cfg, depth, global_pool == 'cls')
    renames = _VIT_LITE_RENAMES + [(r'^classifier\.fc\.', head_key + '.')]
    converted = _rename_all(state_dict, renames,
                            'a Compact-Transformers ViT-Lite')
    notes = []
    if global_pool == 'avg':
        _drop_class_token(converted, 'backbone.cls_token',
                          'backbone.pe.pos_embed', notes)
    return converted, notes + _new_pe_notes(knobs, depth)
