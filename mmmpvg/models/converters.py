"""Convert timm / official / mmpretrain weights to the mmmpvg backbones.

Every converter is a :class:`ConversionTable` (source-name patterns ->
mmpretrain classifier names, and the few tensors that change shape) run by
one function, :func:`convert_with_table`. Only names change, except where
the target structure has no place for a tensor: a class-token checkpoint
loaded into a GAP model loses its class token and the class row of the PE
(a sinusoidal table keeps positions 0..N-1, as a freshly built one has);
PE norms of layers that get no PE in the target method are dropped. Every
such change is reported, and every converter refuses a key it does not know
with the same one-line error.

DeiT (timm / official DeiT / official LaPE / mmpretrain ->
PEVisionTransformer): :func:`read_vit_checkpoint` reads any of those files
(released weights or training checkpoints, with
``torch.load(weights_only=True)``) into timm's names first.

Swin (timm / official microsoft Swin -> PESwinTransformer, i.e. mmpretrain's
Swin names): names change, and each PatchMerging's 4C channels are reordered
from the 2x2 concatenation (x0, x1, x2, x3) to mmcv's ``nn.Unfold`` order.

T2T-ViT (official yitu-opensource Performer T2T-ViT -> PET2TViT, i.e.
mmpretrain's T2T_ViT names): the stem keeps the official names, the blocks
take mmpretrain's.

CeiT (official coeusguo/ceit -> PECeiT) and ViT-Lite (SHI-Labs
Compact-Transformers -> PEViTLite): only names change.
"""
import argparse
import contextlib
import math
import pickle
import re
import zipfile
from typing import (Callable, Dict, List, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import torch

from .backbones.pe_ceit import PECeiT
from .backbones.pe_swin_transformer import PESwinTransformer
from .pe import PE_METHODS, resolve_pe_cfg

Tensors = Dict[str, torch.Tensor]


# timm / DeiT / LaPE name <-> PEVisionTransformer name; {i} is a layer.
_DEIT_NAMES = [
    ('patch_embed.proj.', 'patch_embed.projection.'),
    ('blocks.{i}.norm1.', 'layers.{i}.ln1.'),
    ('blocks.{i}.norm2.', 'layers.{i}.ln2.'),
    ('blocks.{i}.attn.', 'layers.{i}.attn.'),
    ('blocks.{i}.mlp.fc1.', 'layers.{i}.ffn.layers.0.0.'),
    ('blocks.{i}.mlp.fc2.', 'layers.{i}.ffn.layers.1.'),
    ('blocks.{i}.pe_norm.', 'pe.layer_norms.{i}.'),
    ('norm.', 'ln1.'),
    ('pos_embed', 'pos_embed'),
    ('cls_token', 'cls_token'),
]
# Names of mmmpvg checkpoints from before the backbone contract.
_DEIT_EARLIER_NAMES = [('norm.', 'last_norm.'), ('pos_embed', 'pe.pos_embed')]


def name_renames(pairs, source_prefix: str = '',
                 target_prefix: str = '') -> List[Tuple[str, str]]:
    """``(pattern, replacement)`` renames from ``(source, target)`` names:
    ``{i}`` stands for a layer index, a name ending in '.' for a module
    (every key under it), any other name for one key."""
    renames = []
    for source, target in pairs:
        pattern = '^' + re.escape(source_prefix + source).replace(
            re.escape('{i}'), r'(\d+)')
        renames.append((pattern if source.endswith('.') else pattern + '$',
                        (target_prefix + target).replace('{i}', r'\1')))
    return renames


# mmpretrain VisionTransformer / mmmpvg PEVisionTransformer classifier name
# (today's and earlier) -> timm name
_FROM_MMPRETRAIN = name_renames(
    [(mm, timm) for timm, mm in _DEIT_NAMES + _DEIT_EARLIER_NAMES +
     [('dist_token', 'dist_token')]], source_prefix='backbone.') + [
         (r'^head\.(layers\.head|fc)\.', 'head.')]
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


Rename = Tuple[str, Union[str, Callable[[re.Match], str]]]


class ConversionTable(NamedTuple):
    """How one family's checkpoint maps onto an mmpretrain classifier.

    Args:
        source: What the checkpoint is, for messages ('an official CeiT').
        renames: ``(source-key pattern, target key)``, the first match
            wins; the target is the key in the classifier (``backbone.*``,
            ``head.*``; ``{head}`` stands for the head's Linear).
        num_layers: The number of transformer layers the weights have.
        pos_key: Target key of ``pos_0``.
        cls_key: Target key of the class token (None: the family has none).
        sinusoidal_pe: ``pos_0`` is a fixed table indexed by position.
        reshapes: ``(target-key pattern, function)`` for tensors whose
            layout differs.
        ignored: Source keys dropped silently (buffers rebuilt per input).
        dropped: ``{source key: why}`` for tensors the target has no
            place for.
        preset_overrides: The family's PE presets.
    """
    source: str
    renames: Sequence[Rename]
    num_layers: Callable[[Tensors], int]
    pos_key: str = 'backbone.pos_embed'
    cls_key: Optional[str] = 'backbone.cls_token'
    sinusoidal_pe: bool = False
    reshapes: Sequence[Tuple[str, Callable]] = ()
    ignored: str = r'$^'
    dropped: Dict[str, str] = {}
    preset_overrides: Dict[str, dict] = {}


def count_layers(pattern: str) -> Callable[[Tensors], int]:
    """Layers in a state dict whose layer ``i`` keys match ``pattern``
    (group 1 is ``i``)."""
    def count(state_dict: Tensors) -> int:
        indices = [int(m.group(1)) for k in state_dict
                   if (m := re.match(pattern, k))]
        return max(indices) + 1 if indices else 0
    return count


def _num_prefix_tokens(pos_embed: torch.Tensor) -> int:
    rows = pos_embed.shape[1]
    for extra in (0, 1, 2):
        side = math.isqrt(rows - extra)
        if side * side == rows - extra:
            return extra
    raise ValueError(f'pos_embed with {rows} rows is not a square patch grid '
                     'plus 0-2 extra tokens.')


def _fit_extra_tokens(converted: Tensors, table: ConversionTable,
                      with_cls_token: bool, notes: List[str]):
    """Drop the class (and distillation) token rows a GAP target lacks."""
    pos = converted.get(table.pos_key)
    if pos is None:
        return
    source_extra = _num_prefix_tokens(pos)
    target_extra = int(with_cls_token)
    if source_extra < target_extra:
        raise ValueError('The checkpoint has no class token, so it cannot '
                         'initialise a model with a class token '
                         "(global_pool='cls').")
    if table.cls_key in converted and not with_cls_token:
        del converted[table.cls_key]
        notes.append('dropped cls_token: the target uses global average '
                     'pooling')
    surplus = source_extra - target_extra
    if not surplus:
        return
    if table.sinusoidal_pe:  # positions 0..N-1, as a fresh table has
        converted[table.pos_key] = pos[:, :pos.shape[1] - surplus]
    else:
        converted[table.pos_key] = torch.cat(
            [pos[:, :target_extra], pos[:, source_extra:]], dim=1)
    notes.append(f'{table.pos_key}: dropped {surplus} extra-token row(s) '
                 '(class/distillation) to match the target')


def _fit_pe_norms(converted: Tensors, knobs: dict, num_layers: int,
                  notes: List[str]):
    """Drop PE norms of layers the target method feeds no PE; report the
    norms the checkpoint lacks (left at initialisation)."""
    first = 0 if knobs['include_layer0'] else 1
    target = set(range(first, num_layers)) if knobs['layerwise'] else set()
    present = set()
    for key in list(converted):
        match = re.match(r'backbone\.pe\.layer_norms\.(\d+)\.', key)
        if not match:
            continue
        layer = int(match.group(1))
        if layer in target:
            present.add(layer)
        else:
            del converted[key]
            notes.append(f'dropped {key}: layer {layer} receives no PE in '
                         f"method {knobs['method']!r}")
    new = sorted(target - present)
    if new:
        span = f'{new[0]}..{new[-1]}' if new == list(
            range(new[0], new[-1] + 1)) else str(new)
        notes.append(f'PE norms of layers {span} are new in method '
                     f"{knobs['method']!r}: left at initialisation")
    if knobs['last_norm_pos'] is not None and \
            'backbone.pe.last_pos_norm.weight' not in converted:
        notes.append('pe.last_pos_norm (PE term of the Last LN) is new: '
                     'left at initialisation')


def convert_with_table(state_dict: Tensors, table: ConversionTable,
                       pe_cfg: Optional[dict], with_cls_token: bool,
                       head_key: str) -> Tuple[Tensors, List[str]]:
    """Map ``state_dict`` onto an mmpretrain classifier by ``table``.

    Args:
        state_dict: Source weights (unwrapped).
        table: The family's :class:`ConversionTable`.
        pe_cfg: Target PE config, e.g. ``dict(method='mpvg')``.
        with_cls_token: Whether the target has a class token.
        head_key: Where the classifier's Linear lives in the target model
            (``head.fc`` for LinearClsHead, ``head.layers.head`` for
            VisionTransformerClsHead).

    Returns:
        The converted state dict and the notes on what was dropped or left
        at initialisation.

    Raises:
        KeyError: a key the table does not know (another model's weights).
        ValueError: weights that cannot fit the target.
    """
    num_layers = table.num_layers(state_dict)
    if not num_layers:
        raise KeyError(f'No transformer layers found: not {table.source} '
                       'checkpoint?')
    knobs = resolve_pe_cfg(pe_cfg, table.preset_overrides, num_layers,
                           with_cls_token and table.cls_key is not None)
    notes, converted, unknown = [], {}, []
    for key, value in state_dict.items():
        if re.match(table.ignored, key):
            continue
        if key in table.dropped:
            notes.append(f'dropped {key}: {table.dropped[key]}')
            continue
        for pattern, target in table.renames:
            match = re.match(pattern, key)
            if match:
                name = target(match) if callable(target) else \
                    match.expand(target)
                converted[name.replace('{head}', head_key) +
                          key[match.end():]] = value
                break
        else:
            unknown.append(key)
    # A missing class token says more than the keys that come with it.
    _fit_extra_tokens(converted, table, with_cls_token, notes)
    if unknown:
        raise KeyError(f'Unexpected key {unknown[0]!r}: not {table.source} '
                       'checkpoint?')
    for pattern, reshape in table.reshapes:
        for key in [k for k in converted if re.match(pattern, k)]:
            converted[key] = reshape(converted[key])
    _fit_pe_norms(converted, knobs, num_layers, notes)
    return converted, notes


# ------------------------------------------------------------------- DeiT
# timm / DeiT / LaPE name -> classifier with PEVisionTransformer
DEIT_TABLE = ConversionTable(
    source='a timm/DeiT/LaPE vision transformer',
    renames=name_renames(_DEIT_NAMES, target_prefix='backbone.') + [
        (r'^head\.', '{head}.')],
    num_layers=count_layers(r'blocks\.(\d+)\.'),
    dropped=dict.fromkeys(
        ('dist_token', 'head_dist.weight', 'head_dist.bias'),
        'distillation token/head have no place in this model'))


def convert_deit_state_dict(state_dict: Tensors, pe_cfg: Optional[dict],
                            global_pool: str,
                            head_key: str = 'head.layers.head'
                            ) -> Tuple[Tensors, List[str]]:
    """A timm/DeiT/LaPE ``state_dict`` (timm names, see
    :func:`read_vit_checkpoint`) for a :class:`PEVisionTransformer` with
    ``global_pool`` ('cls' or 'avg'); see :func:`convert_with_table`."""
    return convert_with_table(state_dict, DEIT_TABLE, pe_cfg,
                              global_pool == 'cls', head_key)


# ------------------------------------------------------------------- Swin
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


def _swin_table(state_dict: Tensors) -> ConversionTable:
    """timm puts stage s's PatchMerging at the start of stage s + 1
    (``layers.{s+1}.downsample``), the official code at the end of stage s;
    both name the final norm ``norm`` (mmpretrain: ``norm{last stage}``)."""
    stages = {int(m.group(1)) for k in state_dict
              if (m := re.match(r'layers\.(\d+)\.blocks\.', k))}
    shift = 0 if 'layers.0.downsample.reduction.weight' in state_dict else 1
    return ConversionTable(
        source='a timm/official Swin',
        renames=[
            (r'^patch_embed\.proj\.', 'backbone.patch_embed.projection.'),
            (r'^patch_embed\.norm\.', 'backbone.patch_embed.norm.'),
            (r'^absolute_pos_embed$', 'backbone.absolute_pos_embed'),
            (r'^layers\.(\d+)\.blocks\.(\d+)\.(norm[12])\.',
             r'backbone.stages.\1.blocks.\2.\3.'),
            (r'^layers\.(\d+)\.blocks\.(\d+)\.attn\.',
             r'backbone.stages.\1.blocks.\2.attn.w_msa.'),
            (r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.',
             r'backbone.stages.\1.blocks.\2.ffn.layers.0.0.'),
            (r'^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.',
             r'backbone.stages.\1.blocks.\2.ffn.layers.1.'),
            (r'^layers\.(\d+)\.downsample\.',
             lambda m: f'backbone.stages.{int(m.group(1)) - shift}.'
             'downsample.'),
            (r'^norm\.', f'backbone.norm{max(stages, default=0)}.'),
            (r'^head\.(fc\.)?', '{head}.'),
        ],
        num_layers=lambda sd: sum(
            count_layers(rf'layers\.{s}\.blocks\.(\d+)\.')(sd)
            for s in stages),
        pos_key='backbone.absolute_pos_embed',
        cls_key=None,
        reshapes=[(r'backbone\.stages\.\d+\.downsample\.', _unfold_order)],
        ignored=r'.*attn_mask$',
        preset_overrides=PESwinTransformer.pe_preset_overrides)


def convert_swin_state_dict(state_dict: Tensors, pe_cfg: Optional[dict],
                            head_key: str = 'head.fc'
                            ) -> Tuple[Tensors, List[str]]:
    """A timm / official Swin ``state_dict`` for a
    :class:`PESwinTransformer` classifier.

    Attention masks are dropped (mmpretrain builds them per input);
    ``relative_position_index`` is taken from the checkpoint, or written
    from the official definition where timm left it out.
    """
    converted, notes = convert_with_table(
        state_dict, _swin_table(state_dict), pe_cfg, False, head_key)
    for key in [k for k in converted
                if k.endswith('relative_position_bias_table')]:
        index_key = key.replace('bias_table', 'index')
        if index_key not in converted:
            window = (math.isqrt(converted[key].shape[0]) + 1) // 2
            converted[index_key] = window_relative_position_index(window)
    if 'backbone.absolute_pos_embed' not in converted:
        notes.append('absolute_pos_embed is not in the checkpoint (timm '
                     'builds Swin without it): left at initialisation')
    return converted, notes


# ---------------------------------------------------------------- T2T-ViT
# official (Performer) T2T-ViT name -> classifier with PET2TViT
T2T_TABLE = ConversionTable(
    source='an official (Performer stem) T2T-ViT',
    renames=[
        (r'^tokens_to_token\.(attention[12]\.(w$|(kqv|proj|norm1|norm2|'
         r'mlp\.0|mlp\.2)\.)|project\.)', r'backbone.tokens_to_token.\1'),
        (r'^blocks\.(\d+)\.norm1\.', r'backbone.encoder.\1.ln1.'),
        (r'^blocks\.(\d+)\.norm2\.', r'backbone.encoder.\1.ln2.'),
        (r'^blocks\.(\d+)\.attn\.(qkv|proj)\.',
         r'backbone.encoder.\1.attn.\2.'),
        (r'^blocks\.(\d+)\.mlp\.fc1\.',
         r'backbone.encoder.\1.ffn.layers.0.0.'),
        (r'^blocks\.(\d+)\.mlp\.fc2\.', r'backbone.encoder.\1.ffn.layers.1.'),
        (r'^norm\.', 'backbone.norm.'),
        (r'^pos_embed$', 'backbone.pos_embed'),
        (r'^cls_token$', 'backbone.cls_token'),
        (r'^head\.', '{head}.'),
    ],
    num_layers=count_layers(r'blocks\.(\d+)\.'),
    sinusoidal_pe=True)


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


def convert_t2t_state_dict(state_dict: Tensors, pe_cfg: Optional[dict],
                           with_cls_token: bool = True,
                           head_key: str = 'head.layers.head'
                           ) -> Tuple[Tensors, List[str]]:
    """Official T2T-ViT weights (see :func:`t2t_checkpoint_weights`) for a
    :class:`PET2TViT` classifier with or without a class token (Default and
    LaPE, or PVG and MPVG)."""
    if any(k.startswith('tokens_to_token.attention1.attn.')
           for k in state_dict):
        raise KeyError('This is a transformer-stem T2T-ViT_t checkpoint; '
                       'PET2TViT converts the Performer stem only.')
    return convert_with_table(state_dict, T2T_TABLE, pe_cfg, with_cls_token,
                              head_key)


# ------------------------------------------------------------------- CeiT
# official coeusguo/ceit name -> classifier with PECeiT
CEIT_TABLE = ConversionTable(
    source='an official CeiT',
    renames=[
        (r'^i2t\.backbone\.(conv|bn)\.', r'backbone.stem.\1.'),
        (r'^i2t\.proj\.', 'backbone.patch_embed.projection.'),
        (r'^cls_token$', 'backbone.cls_token'),
        (r'^pos_embed$', 'backbone.pos_embed'),
        (r'^blocks\.(\d+)\.norm([12])\.', r'backbone.layers.\1.ln\2.'),
        (r'^blocks\.(\d+)\.(attn|leff)\.', r'backbone.layers.\1.\2.'),
        (r'^lca\.norm([12])\.', r'backbone.lca.ln\1.'),
        (r'^lca\.attn\.', 'backbone.lca.attn.'),
        (r'^lca\.feedforward\.fc1\.', 'backbone.lca.ffn.layers.0.0.'),
        (r'^lca\.feedforward\.fc2\.', 'backbone.lca.ffn.layers.1.'),
        (r'^pos_layer_embed$', 'backbone.pos_layer_embed'),
        (r'^norm\.', 'backbone.last_norm.'),
        (r'^head\.', '{head}.'),
    ],
    num_layers=lambda sd: count_layers(r'blocks\.(\d+)\.')(sd)
    if 'pos_layer_embed' in sd else 0,
    preset_overrides=PECeiT.pe_preset_overrides)


def convert_ceit_state_dict(state_dict: Tensors, pe_cfg: Optional[dict],
                            global_pool: str = 'cls',
                            head_key: str = 'head.fc'
                            ) -> Tuple[Tensors, List[str]]:
    """Official CeiT weights (BatchNorm statistics included) for a
    :class:`PECeiT` classifier with ``global_pool`` 'cls' or 'avg'."""
    return convert_with_table(state_dict, CEIT_TABLE, pe_cfg,
                              global_pool == 'cls', head_key)


# --------------------------------------------------------------- ViT-Lite
# SHI-Labs/Compact-Transformers ViT-Lite name -> classifier with PEViTLite
VIT_LITE_TABLE = ConversionTable(
    source='a Compact-Transformers ViT-Lite',
    renames=[
        (r'^tokenizer\.conv_layers\.0\.0\.',
         'backbone.patch_embed.projection.'),
        (r'^classifier\.class_emb$', 'backbone.cls_token'),
        (r'^classifier\.positional_emb$', 'backbone.pos_embed'),
        (r'^classifier\.blocks\.(\d+)\.pre_norm\.',
         r'backbone.layers.\1.ln1.'),
        (r'^classifier\.blocks\.(\d+)\.self_attn\.',
         r'backbone.layers.\1.attn.'),
        (r'^classifier\.blocks\.(\d+)\.norm1\.', r'backbone.layers.\1.ln2.'),
        (r'^classifier\.blocks\.(\d+)\.linear1\.',
         r'backbone.layers.\1.ffn.layers.0.0.'),
        (r'^classifier\.blocks\.(\d+)\.linear2\.',
         r'backbone.layers.\1.ffn.layers.1.'),
        (r'^classifier\.norm\.', 'backbone.ln1.'),
        (r'^classifier\.fc\.', '{head}.'),
    ],
    num_layers=count_layers(r'classifier\.blocks\.(\d+)\.'))


def convert_vit_lite_state_dict(state_dict: Tensors, pe_cfg: Optional[dict],
                                global_pool: str = 'cls',
                                head_key: str = 'head.fc'
                                ) -> Tuple[Tensors, List[str]]:
    """Compact-Transformers ViT-Lite weights (``vit_*_*_*``, learnable or
    sine PE: a sine table becomes the learnable PE's initial value) for a
    :class:`PEViTLite` classifier. CCT checkpoints (sequence pooling) have
    no place here and are refused."""
    if 'classifier.attention_pool.weight' in state_dict:
        raise KeyError('classifier.attention_pool: a CCT (sequence pooling) '
                       'checkpoint, not ViT-Lite.')
    return convert_with_table(state_dict, VIT_LITE_TABLE, pe_cfg,
                              global_pool == 'cls', head_key)
