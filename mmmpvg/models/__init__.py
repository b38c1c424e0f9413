"""Models registered in mmpretrain's registry (import via custom_imports)."""
from .backbones import (PESwinBlock, PESwinTransformer, PETransformerLayer,
                        PEVisionTransformer)
from .position_embedding import (PE_METHODS, LayerwisePositionEmbedding,
                                 PEPlan, add_pe, fold_pe,
                                 resolve_pe_cfg)

__all__ = [
    'PEVisionTransformer', 'PETransformerLayer', 'PESwinTransformer',
    'PESwinBlock', 'LayerwisePositionEmbedding', 'PEPlan', 'PE_METHODS',
    'add_pe', 'fold_pe', 'resolve_pe_cfg'
]
