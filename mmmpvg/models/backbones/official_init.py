"""The initialisation the official CeiT and Compact-Transformers share."""
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_


def init_linears_and_layer_norms(model: nn.Module, std: float = 0.02):
    """Truncated-normal ``Linear`` weights with zero biases, unit
    ``LayerNorm``s (timm's ``_init_weights`` of both official models)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
