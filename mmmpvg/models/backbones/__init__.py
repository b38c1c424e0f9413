from .pe_t2t_vit import (PerformerT2TModule, PET2TTransformerLayer,
                         PET2TViT, TokenPerformer)
from .pe_ceit import (CeiTLayer, ImageToTokens, LayerwiseClassAttention,
                      LeFF, PECeiT)
from .pe_swin_transformer import PESwinBlock, PESwinTransformer
from .pe_vision_transformer import PETransformerLayer, PEVisionTransformer
from .pe_vit_lite import CCTLayer, PEViTLite

__all__ = [
    'PETransformerLayer', 'PEVisionTransformer', 'PESwinBlock',
    'PESwinTransformer', 'PET2TViT', 'PET2TTransformerLayer',
    'PerformerT2TModule', 'TokenPerformer', 'PECeiT', 'CeiTLayer',
    'ImageToTokens', 'LeFF', 'LayerwiseClassAttention', 'PEViTLite',
    'CCTLayer'
]
