from .pe_ceit import (CeiTLayer, ImageToTokens, LayerwiseClassAttention,
                      LeFF, PECeiT)
from .pe_swin_transformer import PESwinBlock, PESwinTransformer
from .pe_vision_transformer import PETransformerLayer, PEVisionTransformer
from .pe_vit_lite import CCTLayer, PEViTLite

__all__ = [
    'PETransformerLayer', 'PEVisionTransformer', 'PESwinBlock',
    'PESwinTransformer', 'PECeiT', 'CeiTLayer', 'ImageToTokens', 'LeFF',
    'LayerwiseClassAttention', 'PEViTLite', 'CCTLayer'
]
