from .pe_vision_transformer import PETransformerLayer, PEVisionTransformer

__all__ = ['PETransformerLayer', 'PEVisionTransformer']
