"""The position-embedding package: one job per module.

* :mod:`.methods`: the PE methods as knobs and the one resolver;
* :mod:`.sources`: where ``pos_0`` comes from, and the resize function;
* :mod:`.chain`: the LN chain that delivers it to every layer;
* :mod:`.fold`: folding the chain into constants for export;
* :mod:`.backbone`: the contract every backbone family follows.
"""
from .backbone import (LAST_POS_NORM_PREFIX, PEBackboneMixin, PEBlockMixin,
                       PEKeyFacts, PEStage, find_pe_backbone, pe_backbones,
                       pe_key_facts, upgrade_legacy_keys)
from .chain import LayerwisePositionEmbedding, PEPlan, add_pe
from .fold import fold_pe
from .methods import KNOBS, LAYERWISE_KNOBS, PE_METHODS, resolve_pe_cfg
from .sources import (POS_SOURCES, build_pos_embed, resize_pos_embed,
                      sinusoid_table)

__all__ = [
    'LAST_POS_NORM_PREFIX', 'PEBackboneMixin', 'PEBlockMixin', 'PEKeyFacts',
    'PEStage', 'find_pe_backbone', 'pe_backbones', 'pe_key_facts',
    'upgrade_legacy_keys',
    'LayerwisePositionEmbedding', 'PEPlan', 'add_pe', 'fold_pe', 'KNOBS',
    'LAYERWISE_KNOBS', 'PE_METHODS', 'resolve_pe_cfg', 'POS_SOURCES',
    'build_pos_embed', 'resize_pos_embed', 'sinusoid_table'
]
