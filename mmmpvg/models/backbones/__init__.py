from .pe_t2t_vit import (PerformerT2TModule, PET2TTransformerLayer,
                          PET2TViT, TokenPerformer)
from .pe_swin_transformer import PESwinBlock, PESwinTransformer
from .pe_vision_transformer import PETransformerLayer, PEVisionTransformer

__all__ = [
    'PETransformerLayer', 'PEVisionTransformer', 'PESwinBlock',
    'PESwinTransformer', 'PET2TViT', 'PET2TTransformerLayer',
    'PerformerT2TModule', 'TokenPerformer'
]
