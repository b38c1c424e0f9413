"""The one contract every PE backbone family follows.

A family is its upstream backbone (mmpretrain's ``VisionTransformer``,
``SwinTransformer``, ``T2T_ViT``, or ``BaseBackbone`` where mmpretrain has
none) with :class:`PEBackboneMixin` in front. It declares only what differs:

* its upstream class (the class it mixes into) and parameter names;
* its stages, their widths and where tokens enter them
  (:meth:`~PEBackboneMixin.pe_stages`: blocks that take
  ``block(x, hw_shape, pe)``, see :class:`PEBlockMixin`);
* its PE source (``pos_source`` and ``pos_embed_name``, the upstream name
  of ``pos_0``) and the Last LN (``last_norm_name``).

Written here, once for all families: building ``pos_0`` and the LN chain,
adding the PE to the tokens, initialising it before any ``Pretrained``
``init_cfg`` loads, resizing it on load, renaming keys of checkpoints saved
with earlier names, ``get_layer_depth`` for layer-wise lr decay,
``train()``/``eval()`` returning the module, and the facts about checkpoint
keys that the engine checks. Nothing outside this package names a PE
parameter or a concrete backbone class: it asks this contract.
"""
import re
from typing import (Dict, List, NamedTuple, Optional, Sequence, Tuple)

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_

from .chain import LayerwisePositionEmbedding, PEPlan
from .sources import build_pos_embed, resize_loaded_pos_embed

# Keys of the LN chain (under the backbone): the norm feeding layer l, and
# MPVG's Eq. 11 norm. Both exist for some PE methods only.
PE_NORM_KEY = re.compile(r'^pe\.layer_norms\.(\d+)\.')
LAST_POS_NORM_PREFIX = 'pe.last_pos_norm.'
METHOD_KEY_PREFIXES = ('pe.layer_norms.', LAST_POS_NORM_PREFIX)
# Upstream load hooks that resize pos_0 their own way; the contract's
# replaces them so one function resizes at load and at forward.
UPSTREAM_PE_LOAD_HOOKS = ('_prepare_pos_embed', '_prepare_abs_pos_embed')
# Where pos_0 was kept before the contract (inside the PE module).
LEGACY_POS_EMBED_KEY = 'pe.pos_embed'


class PEStage(NamedTuple):
    """One stage of a backbone as the PE sees it.

    ``blocks`` run in order with ``block(x, hw_shape, pe)``; ``downsample``
    maps ``(tokens, hw_shape)`` of this stage to the next one's (None for
    the last stage) and carries the PE along the same path.
    """
    blocks: Sequence[nn.Module]
    dims: int
    downsample: Optional[nn.Module] = None


class PEBlockMixin:
    """A block that takes its PE at the attention input.

    ``forward(x, hw_shape, pe=None)`` computes ``attn(norm(x) + pe)``; the
    norm is ``getattr(block, pe_norm_name)`` (the analysis hooks it).
    """
    pe_norm_name = 'ln1'

    @property
    def pe_norm(self) -> nn.Module:
        return getattr(self, self.pe_norm_name)


class PEBackboneMixin:
    """Mixed in front of a family's upstream backbone class.

    A family sets ``global_pool`` ('cls' or 'avg') and ``num_extra_tokens``,
    builds its modules, then calls :meth:`build_pe`; its forward uses
    :meth:`add_input_pe`, passes ``plan.per_layer[l]`` to block ``l`` and
    ends with :meth:`last_norm_with_pe`.
    """
    # ---------------------------------------------- declared by a family
    pos_embed_name = 'pos_embed'
    # Name of the Last LN (None where the family has none).
    last_norm_name: Optional[str] = 'ln1'
    # False where the Last LN normalises a pooled token, not the token map
    # (CeiT: the LCA output); the analysis then records no Last LN.
    last_norm_sees_tokens = True
    # {method: {knob: value}}: how the family changes a method's preset.
    pe_preset_overrides: Dict[str, dict] = {}
    # Parameters at depth 0 besides pos_0, for families without an
    # upstream get_layer_depth.
    embedding_prefixes: Tuple[str, ...] = ('patch_embed.', 'cls_token')
    cls_token_init_std = 0.02  # 0 initialises the class token to zero
    # Earlier names of this family's parameters -> today's (prefixes end in
    # '.'); pos_0's earlier place is added for every family.
    legacy_keys: Dict[str, str] = {}

    def pe_stages(self) -> List[PEStage]:
        """The stages in order; every block gets ``plan.per_layer[l]``."""
        raise NotImplementedError

    # ----------------------------------------------------------- building
    def build_pe(self,
                 pe_cfg: Optional[dict],
                 grid_size: Tuple[int, int],
                 norm_cfg: dict,
                 pos_source: str = 'learnable',
                 pos_embed_init_std: float = 0.02,
                 interpolate_mode: str = 'bicubic'):
        """Build ``pos_0`` (under :attr:`pos_embed_name`) and the LN chain
        (``self.pe``) for the stages :meth:`pe_stages` lists."""
        stages = self.pe_stages()
        grid_size = tuple(grid_size)
        num_tokens = self.num_extra_tokens + grid_size[0] * grid_size[1]
        if hasattr(self, self.pos_embed_name):  # upstream's (T2T: a buffer)
            delattr(self, self.pos_embed_name)
        setattr(self, self.pos_embed_name,
                build_pos_embed(pos_source, num_tokens, stages[0].dims))
        self.pos_source = pos_source
        self.pos_embed_init_std = pos_embed_init_std
        self.pe = LayerwisePositionEmbedding(
            grid_size=grid_size,
            num_extra_tokens=self.num_extra_tokens,
            stage_depths=[len(stage.blocks) for stage in stages],
            stage_dims=[stage.dims for stage in stages],
            pe_cfg=pe_cfg,
            norm_cfg=norm_cfg,
            preset_overrides=self.pe_preset_overrides,
            interpolate_mode=interpolate_mode)
        for module in self.modules():
            # mmpretrain draws drop-path rates with numpy; a numpy scalar
            # is a graph input to torch.compile and breaks the graph.
            if hasattr(module, 'drop_prob'):
                module.drop_prob = float(module.drop_prob)
        for key, wrapped in list(self._load_state_dict_pre_hooks.items()):
            hook = getattr(wrapped, 'hook', wrapped)
            if getattr(hook, '__name__', None) in UPSTREAM_PE_LOAD_HOOKS:
                del self._load_state_dict_pre_hooks[key]
        self._register_load_state_dict_pre_hook(self._prepare_pe_state)

    @property
    def pos_embed_param(self) -> nn.Parameter:
        """``pos_0`` as stored (at :attr:`pe`'s grid)."""
        return getattr(self, self.pos_embed_name)

    def resized_pos_embed(self, grid_size: Tuple[int, int]) -> torch.Tensor:
        """``pos_0`` interpolated to a first-stage grid, as a forward at
        that grid uses it."""
        return self.pe.resized(self.pos_embed_param, grid_size)

    @property
    def pe_method(self) -> str:
        return self.pe.method

    def pe_last_norm(self) -> Optional[nn.Module]:
        """The Last LN, to which MPVG adds ``LN''(pos_k)`` (Eq. 11)."""
        if self.last_norm_name is None:
            return None
        return getattr(self, self.last_norm_name, None)

    def pe_key_prefixes(self) -> Tuple[str, ...]:
        """Key prefixes (under the backbone) of everything the PE owns:
        ``pos_0`` and the LN chain."""
        return (self.pos_embed_name, 'pe.')

    def pe_blocks(self) -> List[nn.Module]:
        """All blocks in order: ``pe_blocks()[l]`` gets the PE of layer l."""
        return [block for stage in self.pe_stages() for block in stage.blocks]

    # ------------------------------------------------------------ forward
    def pe_plan(self, grid_size: Tuple[int, int]) -> PEPlan:
        """What this pass adds where, for a first-stage grid."""
        downsamples = [stage.downsample for stage in self.pe_stages()[:-1]]
        return self.pe(grid_size, self.pos_embed_param, downsamples)

    def add_input_pe(self, x: torch.Tensor, grid_size: Tuple[int, int]
                     ) -> Tuple[torch.Tensor, PEPlan]:
        """Tokens with ``pos_0`` added (Eq. 1, 8) after dropout, and the
        plan whose ``per_layer`` the blocks get."""
        plan = self.pe_plan(grid_size)
        if plan.to_input is not None:
            x = x + plan.to_input
        return self.drop_after_pos(x), plan

    def last_norm_with_pe(self, x: torch.Tensor,
                          plan: PEPlan) -> torch.Tensor:
        """``y = LN(x) [+ LN''(pos_k)]`` (Eq. 4 / 11)."""
        x = self.pe_last_norm()(x)
        if plan.to_last_norm is not None:
            x = x + plan.to_last_norm
        return x

    # ------------------------------------------------------ init and mode
    def init_backbone_weights(self):
        """The family's own initialisation (official init); runs before
        the PE's and before any ``Pretrained`` ``init_cfg``."""

    def init_pe_weights(self):
        """Truncated-normal learnable ``pos_0`` and class token."""
        if self.pos_source == 'learnable':
            trunc_normal_(self.pos_embed_param, std=self.pos_embed_init_std)
        cls_token = getattr(self, 'cls_token', None)
        if cls_token is not None:
            if self.cls_token_init_std:
                trunc_normal_(cls_token, std=self.cls_token_init_std)
            else:
                nn.init.zeros_(cls_token)

    def init_weights(self):
        # Own init first, then BaseModule's, which runs every other
        # init_cfg and loads a Pretrained one (dict, list, or the
        # classifier's) last, so the checkpoint's weights stay. Upstream
        # init_weights re-initialise the PE after a list init_cfg.
        if not self._is_init:
            self.init_backbone_weights()
            self.init_pe_weights()
        BaseModule.init_weights(self)

    def train(self, mode: bool = True):
        # mmpretrain's backbones return None from train(); nn.Module's
        # contract (``m = model.eval()``, ``torch.compile(model.eval())``)
        # expects the module itself.
        super().train(mode)
        return self

    # --------------------------------------------------------- lr decay
    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """Layer depth for mmpretrain's layer-wise lr decay constructor:
        the upstream rule (or, without one, embeddings at 0 and block ``l``
        at ``l + 1``), with ``pos_0`` at 0 and ``LN'_l`` beside block l."""
        upstream = getattr(super(), 'get_layer_depth', None)
        depth, num_depths = (upstream or self._block_depth)(param_name,
                                                            prefix)
        if not param_name.startswith(prefix):
            return depth, num_depths
        name = param_name[len(prefix):]
        if name == self.pos_embed_name:
            return 0, num_depths
        norm = PE_NORM_KEY.match(name)
        if norm:
            return int(norm.group(1)) + 1, num_depths
        return depth, num_depths

    def _block_depth(self, param_name: str, prefix: str = ''):
        num_depths = self.pe.num_layers + 2
        if not param_name.startswith(prefix):
            return num_depths - 1, num_depths
        name = param_name[len(prefix):]
        if name.startswith(self.embedding_prefixes):
            return 0, num_depths
        names = {id(module): name for name, module in self.named_modules()}
        for index, block in enumerate(self.pe_blocks()):
            if name.startswith(names[id(block)] + '.'):
                return index + 1, num_depths
        return num_depths - 1, num_depths

    # -------------------------------------------------------- checkpoints
    def legacy_key_map(self) -> Dict[str, str]:
        """Earlier key -> today's key (a '.'-ended prefix maps a module)."""
        renames = dict(self.legacy_keys)
        if self.pos_embed_name != LEGACY_POS_EMBED_KEY:
            renames[LEGACY_POS_EMBED_KEY] = self.pos_embed_name
        return renames

    def upgrade_legacy_keys(self, state_dict: dict, prefix: str = '') -> int:
        """Rename, in place, keys under ``prefix`` that a checkpoint saved
        before the contract holds; returns how many were renamed."""
        renames = self.legacy_key_map()
        renamed = 0
        for key in [k for k in state_dict if k.startswith(prefix)]:
            name = key[len(prefix):]
            for old, new in renames.items():
                if name == old or (old.endswith('.') and
                                   name.startswith(old)):
                    target = prefix + new + name[len(old):]
                    if target not in state_dict:
                        state_dict[target] = state_dict.pop(key)
                        renamed += 1
                    break
        if renamed:
            print_log(f'{type(self).__name__}: renamed {renamed} key(s) of a '
                      'checkpoint saved with earlier parameter names '
                      f'({renames}).', logger='current')
        return renamed

    def _prepare_pe_state(self, state_dict, prefix, *args, **kwargs):
        """Load pre-hook: earlier names, then ``pos_0`` of another grid
        resized to the model's (as timm and mmpretrain do)."""
        self.upgrade_legacy_keys(state_dict, prefix)
        key = prefix + self.pos_embed_name
        own = self.pos_embed_param
        if key not in state_dict or state_dict[key].shape == own.shape:
            return
        state_dict[key] = resize_loaded_pos_embed(
            state_dict[key], key, own.shape, self.pe.grid_size,
            self.num_extra_tokens, self.pe.interpolate_mode)

    def pe_key_facts(self, prefix: str = '') -> 'PEKeyFacts':
        """This backbone's keys, under ``prefix``, as the engine checks a
        checkpoint against them."""
        # The class token comes with the pooling of Default and LaPE.
        return PEKeyFacts(
            resizable=(prefix + self.pos_embed_name, ),
            method_prefixes=tuple(prefix + p for p in METHOD_KEY_PREFIXES +
                                  ('cls_token', )))


class PEKeyFacts(NamedTuple):
    """Checkpoint-key facts of the PE backbones in a model.

    ``resizable``: keys of ``pos_0``, which load at another grid (resized);
    ``method_prefixes``: key prefixes that exist for some PE methods only,
    the class token included (a mismatch there means another PE method,
    not another architecture).
    """
    resizable: Tuple[str, ...] = ()
    method_prefixes: Tuple[str, ...] = ()

    def __add__(self, other: 'PEKeyFacts') -> 'PEKeyFacts':
        return PEKeyFacts(self.resizable + other.resizable,
                          self.method_prefixes + other.method_prefixes)


def pe_backbones(model: nn.Module) -> List[Tuple[str, PEBackboneMixin]]:
    """``(name, module)`` of every PE backbone inside ``model``."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, PEBackboneMixin)]


def _key_prefix(name: str) -> str:
    return f'{name}.' if name else ''


def pe_key_facts(model: nn.Module) -> PEKeyFacts:
    """:class:`PEKeyFacts` of every PE backbone in ``model`` (full keys)."""
    facts = PEKeyFacts()
    for name, backbone in pe_backbones(model):
        facts = facts + backbone.pe_key_facts(_key_prefix(name))
    return facts


def upgrade_legacy_keys(model: nn.Module, state_dict: dict) -> int:
    """Rename, in place, the earlier keys of every PE backbone of
    ``model`` in a whole-model ``state_dict``."""
    return sum(backbone.upgrade_legacy_keys(state_dict, _key_prefix(name))
               for name, backbone in pe_backbones(model))


def find_pe_backbone(model: nn.Module) -> PEBackboneMixin:
    """The one PE backbone inside ``model``."""
    found = [module for _, module in pe_backbones(model)]
    if len(found) != 1:
        raise ValueError(
            f'Expected exactly one mmmpvg PE backbone in the model, found '
            f'{len(found)} ({type(model).__name__}); the analysis tools read '
            'the position embedding of mmmpvg backbones.')
    return found[0]
