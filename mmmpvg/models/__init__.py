"""Models registered in mmpretrain's registry (import via custom_imports)."""
from .backbones import PETransformerLayer, PEVisionTransformer
from .position_embedding import (PE_METHODS, LayerwisePositionEmbedding,
                                 PEPlan, resolve_pe_cfg)

__all__ = [
    'PEVisionTransformer', 'PETransformerLayer', 'LayerwisePositionEmbedding',
    'PEPlan', 'PE_METHODS', 'resolve_pe_cfg'
]
