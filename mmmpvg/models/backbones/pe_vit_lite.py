"""ViT-Lite (Hassani et al. 2022, Compact-Transformers) with a PE switch.

ViT-Lite-7/4 is a small ViT for 32x32 images (Table 2): a 4x4 patch
convolution, 7 layers of width 256, 4 heads, MLP 512, qkv without bias, a
learnable PE initialised with std 0.2. Its layers keep CCT's order, which
differs from pre-norm ViT: the LayerNorm before the MLP normalises the
residual stream itself::

    x = x + drop_path(attn(pre_norm(x) + pe))     # pe: LN'_l(pos), Eq. 6/9
    x = norm1(x)
    x = x + drop_path(mlp(x))

Everything else (class token or GAP, the PE plan, the Last LN and MPVG's
``LN''`` before the mean) is :class:`PEVisionTransformer`, whose parameter
names this model keeps (``pre_norm`` -> ``ln1``, ``norm1`` -> ``ln2``).
"""
import torch
import torch.nn as nn
from mmpretrain.registry import MODELS

from ..pe import add_pe
from .official_init import init_linears_and_layer_norms
from .pe_vision_transformer import PETransformerLayer, PEVisionTransformer


class CCTLayer(PETransformerLayer):
    """CCT's layer order (attn, LN on the residual stream, MLP); the same
    parameters as :class:`PETransformerLayer`."""

    def forward(self, x: torch.Tensor, hw_shape=None,
                pe=None) -> torch.Tensor:
        x = x + self.attn(add_pe(self.ln1(x), pe))
        x = self.ln2(x)
        return self.ffn(x, identity=x)


@MODELS.register_module()
class PEViTLite(PEVisionTransformer):
    """ViT-Lite with Default / LaPE / PVG / MPVG position embedding.

    Args:
        arch (str | dict): ``'vit-lite-7'`` (Table 2) or the other
            Compact-Transformers sizes, or a dict as for
            :class:`PEVisionTransformer`.
        img_size, patch_size: 32 and 4 for ``vit_7_4_32``.
        global_pool (str): ``'cls'`` (official ViT-Lite) or ``'avg'``: the
            mean of the tokens after the Last LN (PVG/MPVG), no extra norm.
        attn_drop_rate (float): 0.1 as in Compact-Transformers.
        drop_path_rate (float): 0.1 as in Compact-Transformers.
        qkv_bias (bool): False as in Compact-Transformers.
        norm_cfg (dict): PyTorch's LayerNorm (eps 1e-5) as in the original.
        pos_embed_init_std (float): 0.2 as in Compact-Transformers.
        **kwargs: Other :class:`PEVisionTransformer` arguments.
    """
    arch_zoo = {
        name: dict(embed_dims=dims, num_layers=layers, num_heads=heads,
                   feedforward_channels=hidden)
        for (dims, layers, heads, hidden), names in {
            (128, 2, 2, 128): ('vit-lite-2', 'vit-2'),
            (128, 4, 2, 128): ('vit-lite-4', 'vit-4'),
            (256, 6, 4, 512): ('vit-lite-6', 'vit-6'),
            (256, 7, 4, 512): ('vit-lite-7', 'vit-7'),
        }.items() for name in names
    }
    layer_class = CCTLayer
    cls_token_init_std = 0  # Compact-Transformers: zeros

    def __init__(self,
                 arch='vit-lite-7',
                 img_size=32,
                 patch_size: int = 4,
                 global_pool: str = 'cls',
                 attn_drop_rate: float = 0.1,
                 drop_path_rate: float = 0.1,
                 qkv_bias: bool = False,
                 norm_cfg: dict = dict(type='LN'),
                 pos_embed_init_std: float = 0.2,
                 **kwargs):
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            global_pool=global_pool,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            qkv_bias=qkv_bias,
            norm_cfg=norm_cfg,
            pos_embed_init_std=pos_embed_init_std,
            **kwargs)

    def init_backbone_weights(self):
        """Compact-Transformers' initialisation: Kaiming-normal tokenizer
        conv (bias at PyTorch's default), truncated-normal linears with zero
        biases, unit LayerNorms (PE std 0.2, class token zero: the
        contract's)."""
        nn.init.kaiming_normal_(self.patch_embed.projection.weight)
        init_linears_and_layer_norms(self)
