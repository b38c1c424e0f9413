from .pe_swin_transformer import PESwinBlock, PESwinTransformer
from .pe_vision_transformer import PETransformerLayer, PEVisionTransformer

__all__ = [
    'PETransformerLayer', 'PEVisionTransformer', 'PESwinBlock',
    'PESwinTransformer'
]
