"""Layer-wise lr decay for detectors and segmentors with a ViT backbone.

mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` asks the model for
``get_layer_depth``; mmpretrain classifiers have it, mmdet detectors and
mmseg ``EncoderDecoder`` do not. This constructor asks their backbone
instead (the backbone contract's ``get_layer_depth``, which ``ViTAdapter``
has): patch embedding and PE depth 0, ViT layer i depth i + 1,
everything else (adapter, neck, heads) the last depth, lr scale 1 -- the
grouping of ViT-Adapter's ``LayerDecayOptimizerConstructor``.
"""
from functools import partial
from typing import Callable, List, Optional

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMDET_CONSTRUCTORS
from mmpretrain.engine.optimizers import \
    LearningRateDecayOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMSEG_CONSTRUCTORS
from torch import nn


@MMDET_CONSTRUCTORS.register_module()
@MMSEG_CONSTRUCTORS.register_module()
class BackboneLayerDecayOptimWrapperConstructor(
        LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's layer-decay constructor, depth taken from
    ``model.backbone.get_layer_depth`` when the model has none.

    ``paramwise_cfg`` is mmpretrain's: ``layer_decay_rate``,
    ``bias_decay_mult``, ``norm_decay_mult``, ``flat_decay_mult``,
    ``custom_keys`` (``decay_mult`` only).
    """

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   get_layer_depth: Optional[Callable] = None,
                   **kwargs) -> None:
        if get_layer_depth is None and not hasattr(module, 'get_layer_depth'):
            backbone = getattr(module, 'backbone', None)
            if not hasattr(backbone, 'get_layer_depth'):
                raise TypeError(
                    f'Layer-wise lr decay needs {type(module).__name__} or '
                    f'its backbone ({type(backbone).__name__}) to have '
                    '`get_layer_depth`.')
            get_layer_depth = partial(backbone.get_layer_depth,
                                      prefix=f'{prefix}backbone.')
        super().add_params(params, module, prefix, get_layer_depth, **kwargs)
