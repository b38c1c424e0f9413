"""Models registered in mmpretrain's registry (import via custom_imports)."""
from .backbones import (PECeiT, PerformerT2TModule, PESwinBlock,
                        PESwinTransformer, PET2TTransformerLayer, PET2TViT,
                        PETransformerLayer, PEVisionTransformer, PEViTLite,
                        TokenPerformer)
from .pe import (PE_METHODS, LayerwisePositionEmbedding, PEBackboneMixin,
                 PEPlan, add_pe, find_pe_backbone, fold_pe, resolve_pe_cfg)

__all__ = [
    'PEVisionTransformer', 'PETransformerLayer', 'PESwinTransformer',
    'PESwinBlock', 'PET2TViT', 'PET2TTransformerLayer', 'PerformerT2TModule',
    'TokenPerformer', 'PECeiT', 'PEViTLite', 'LayerwisePositionEmbedding',
    'PEBackboneMixin', 'PEPlan', 'PE_METHODS', 'add_pe', 'find_pe_backbone',
    'fold_pe', 'resolve_pe_cfg'
]
