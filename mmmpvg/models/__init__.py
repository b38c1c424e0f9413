"""Models registered in mmpretrain's registry (import via custom_imports)."""
from .backbones import (PECeiT, PerformerT2TModule, PESwinBlock,
                        PESwinTransformer, PET2TTransformerLayer, PET2TViT,
                        PETransformerLayer, PEVisionTransformer, PEViTLite,
                        TokenPerformer)
from .position_embedding import (PE_METHODS, LayerwisePositionEmbedding,
                                 PEPlan, add_pe, fold_pe, resolve_pe_cfg)

__all__ = [
    'PEVisionTransformer', 'PETransformerLayer', 'PESwinTransformer',
    'PESwinBlock', 'PET2TViT', 'PET2TTransformerLayer', 'PerformerT2TModule',
    'TokenPerformer', 'PECeiT', 'PEViTLite', 'LayerwisePositionEmbedding',
    'PEPlan', 'PE_METHODS', 'add_pe', 'fold_pe', 'resolve_pe_cfg'
]
