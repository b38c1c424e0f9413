"""One clear error for a checkpoint that does not fit the model.

MMEngine loads ``load_from`` / ``--resume`` / test checkpoints with
``strict=False`` and only logs what did not fit, so a checkpoint of another
PE method, another head or another width silently leaves weights at their
initial values. :class:`CheckpointCompatibilityHook` checks the checkpoint
against the model right after it is read (``after_load_checkpoint``), before
anything is copied, and refuses it naming every key that does not fit.

What still loads: a position embedding stored at another grid (the PE
backbones resize it, bicubic; not on ``--resume``, where the optimizer state
would keep the old shape), a checkpoint saved with earlier parameter names
(renamed, logged) and, for training from ``load_from``, a checkpoint that
lacks weights the model has (they keep their initialisation, logged).
"""
import re
from typing import Dict, List

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..models.pe import PEKeyFacts, pe_key_facts, upgrade_legacy_keys


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not fit the model."""


def describe_mismatch(model_state: Dict[str, torch.Tensor],
                      checkpoint_state: Dict[str, torch.Tensor],
                      resuming: bool, require_all: bool,
                      facts: PEKeyFacts = PEKeyFacts()) -> List[str]:
    """Lines naming what in ``checkpoint_state`` does not fit the model;
    empty when it loads as intended. ``facts`` are the model's PE keys
    (:func:`~mmmpvg.models.pe.pe_key_facts`)."""
    problems = []
    shapes = [(k, tuple(checkpoint_state[k].shape), tuple(v.shape))
              for k, v in model_state.items() if k in checkpoint_state
              and checkpoint_state[k].shape != v.shape]
    grid_changes = [s for s in shapes if s[0] in facts.resizable]
    other_shapes = [s for s in shapes if s[0] not in facts.resizable]
    if resuming and grid_changes:
        problems.append(
            'position embedding grid differs: ' + '; '.join(
                f'{k} checkpoint {a} vs model {b}' for k, a, b in grid_changes)
            + '. --resume continues a run, whose optimizer state has the '
            "checkpoint's shape: resume with the original image size, or "
            'start a new run with load_from=<checkpoint>, which resizes the '
            'position embedding.')
    unexpected = sorted(set(checkpoint_state) - set(model_state))
    missing = sorted(set(model_state) - set(checkpoint_state))
    pe_unexpected = [k for k in unexpected
                     if k.startswith(facts.method_prefixes)]
    pe_missing = [k for k in missing if k.startswith(facts.method_prefixes)]
    other_missing = [k for k in missing if k not in pe_missing]
    other_unexpected = [k for k in unexpected if k not in pe_unexpected]
    heads = [k for k, _, _ in other_shapes if k.startswith('head.')]
    body_shapes = [s for s in other_shapes if s[0] not in heads]
    if body_shapes or other_unexpected or (require_all and other_missing):
        # Widths or depths differ; the PE keys differ with them.
        details = [f'{k} checkpoint {a} vs model {b}'
                   for k, a, b in body_shapes[:3]]
        for title, keys in (('not in the model', other_unexpected),
                            ('missing in the checkpoint', other_missing)):
            if keys:
                details.append(f'{len(keys)} weights {title}, e.g. '
                               f'{keys[:3]}')
        problems.append(
            'the checkpoint is of another model size (arch): ' +
            '; '.join(details) + ". Use a config with the checkpoint's "
            'arch (embed_dims, num_layers), or convert the weights that '
            'fit.')
        return problems
    if heads:
        problems.append(
            'shape mismatch: ' + '; '.join(
                f'{k} checkpoint {a} vs model {b}'
                for k, a, b in other_shapes) +
            '. The classification head has another number of classes: to '
            'fine-tune on a new label set load only the backbone, '
            "model.backbone.init_cfg=dict(type='Pretrained', "
            "checkpoint=..., prefix='backbone.').")
    if pe_unexpected or (require_all and pe_missing):
        problems.append(
            'the checkpoint was trained with another PE method: it has '
            f'{pe_unexpected or "none"} that the model lacks and lacks '
            f'{pe_missing or "none"}. Set model.backbone.pe_cfg to the '
            "checkpoint's method, or convert it with the converter of its "
            'family in tools/model_converters/.')
    if require_all:
        if other_missing:
            problems.append(f'missing in the checkpoint: {other_missing}.')
        if other_unexpected:
            problems.append(
                f'not in the model: {other_unexpected}.')
    return problems


@HOOKS.register_module()
class CheckpointCompatibilityHook(Hook):
    """Refuse a checkpoint that does not fit the model, before loading it.

    Args:
        require_all (bool): Every model weight must come from the checkpoint
            and every checkpoint weight must have a place (testing).
            Otherwise (training from ``load_from``) weights the checkpoint
            lacks keep their initialisation.
    """
    priority = 'VERY_HIGH'

    def __init__(self, require_all: bool = False):
        self.require_all = require_all

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        state = checkpoint.get('state_dict', checkpoint)
        resuming = bool(runner._resume)
        # In place: the checkpoint then loads under today's names.
        if upgrade_legacy_keys(model, state) and resuming:
            raise CheckpointMismatchError(
                f'Cannot resume from {runner._load_from or runner.work_dir}: '
                'it was saved with earlier parameter names, and its '
                'optimizer state follows their order. Start a new run from '
                'its weights with load_from=<checkpoint> instead.')
        state = {re.sub(r'^module\.', '', k): v for k, v in state.items()
                 if isinstance(v, torch.Tensor)}
        problems = describe_mismatch(model.state_dict(), state, resuming,
                                     self.require_all, pe_key_facts(model))
        if problems:
            source = runner._load_from or f'the latest in {runner.work_dir}'
            what = 'resume from' if resuming else 'load'
            raise CheckpointMismatchError(
                f'Cannot {what} checkpoint {source}: it does not fit the '
                f'model of this config.\n  ' + '\n  '.join(problems))
