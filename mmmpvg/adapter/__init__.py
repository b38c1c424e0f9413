"""ViT-Adapter over the PE-method DeiT, for mmdet and mmseg.

Importing this package (``custom_imports=dict(imports=['mmmpvg.adapter'])``)
registers ``ViTAdapter`` in mmdet's and mmseg's MODELS and
``BackboneLayerDecayOptimWrapperConstructor`` in their optimizer-wrapper
constructors.
"""
from .adapter_modules import (ConvFFN, Extractor, Injector, InteractionBlock,
                              SpatialPriorModule)
from .layer_decay import BackboneLayerDecayOptimWrapperConstructor
from .ms_deform_attn import (MSDeformAttn, multi_scale_deformable_attention,
                             select_backend)
from .vit_adapter import ViTAdapter
from .window_attention import WindowMultiheadAttention

__all__ = [
    'ViTAdapter', 'MSDeformAttn', 'multi_scale_deformable_attention',
    'SpatialPriorModule', 'InteractionBlock', 'Injector', 'Extractor',
    'ConvFFN', 'BackboneLayerDecayOptimWrapperConstructor',
    'WindowMultiheadAttention', 'select_backend'
]
