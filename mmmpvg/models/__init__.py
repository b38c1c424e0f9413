"""Models registered in mmpretrain's registry (import via custom_imports)."""
from .backbones import (PECeiT, PESwinBlock, PESwinTransformer,
                        PETransformerLayer, PEVisionTransformer, PEViTLite)
from .position_embedding import (PE_METHODS, LayerwisePositionEmbedding,
                                 PEPlan, add_pe, resolve_pe_cfg)

__all__ = [
    'PEVisionTransformer', 'PETransformerLayer', 'PESwinTransformer',
    'PESwinBlock', 'PECeiT', 'PEViTLite', 'LayerwisePositionEmbedding',
    'PEPlan', 'PE_METHODS', 'add_pe', 'resolve_pe_cfg'
]
