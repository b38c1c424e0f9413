"""Tiny members of every backbone family, shared by the tests.

Each family is built the way its configs build it (the registered type and
its arguments), scaled down so a forward takes milliseconds. A method's
pooling follows the paper: class token for Default and LaPE, global
average pooling for PVG and MPVG (Swin has no class token).
"""
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401  (registers the backbones)

METHODS = ('default', 'lape', 'pvg', 'mpvg')
VIT_ARCH = dict(embed_dims=32, num_layers=4, num_heads=2,
                feedforward_channels=64)
TINY_BACKBONES = dict(
    deit=dict(type='PEVisionTransformer', arch=VIT_ARCH, img_size=32,
              patch_size=8),
    vit_lite=dict(type='PEViTLite', arch=VIT_ARCH, img_size=32,
                  patch_size=8),
    swin=dict(type='PESwinTransformer',
              arch=dict(embed_dims=16, depths=[2, 2], num_heads=[2, 4]),
              img_size=32, patch_size=4, window_size=4, out_indices=(1, ),
              drop_path_rate=0.),
    t2t=dict(type='PET2TViT', arch=VIT_ARCH, img_size=64,
             t2t_cfg=dict(token_dims=16)),
    ceit=dict(type='PECeiT', arch=VIT_ARCH, img_size=64, stem_channels=8),
)
# Image sizes: the one the PE is stored for, and another (resize).
IMG_SIZES = dict(deit=(32, 48), vit_lite=(32, 48), swin=(32, 48),
                 t2t=(64, 96), ceit=(64, 96))
FAMILIES = tuple(sorted(TINY_BACKBONES))
NUM_CLASSES = 5  # of the tiny classifiers
# Families whose PVG/MPVG give layer 0 a PE norm too.
PE_IN_LAYER0 = ('swin', 'ceit')
# Families whose Last LN normalises one pooled token (CeiT: the LCA's
# output), not the token map: the analysis records no Last LN for them.
POOLED_LAST_NORM = ('ceit', )


def uses_class_token(family: str, method: str) -> bool:
    return family != 'swin' and method in ('default', 'lape')


def pooling_args(family: str, cls_token: bool) -> dict:
    """The backbone arguments that choose class token or GAP."""
    if family == 'swin':
        return {}
    if family == 't2t':
        return dict(with_cls_token=cls_token,
                    out_type='cls_token' if cls_token else 'avg_featmap')
    return dict(global_pool='cls' if cls_token else 'avg')


def backbone_cfg(family: str, method: str, cls_token=None, **overrides):
    """A tiny ``family`` backbone config for ``method`` (pooling as the
    paper, unless ``cls_token`` says otherwise)."""
    if cls_token is None:
        cls_token = uses_class_token(family, method)
    cfg = dict(TINY_BACKBONES[family], pe_cfg=dict(method=method),
               **pooling_args(family, cls_token))
    cfg.update(overrides)
    return cfg


def classifier_cfg(backbone: dict, num_classes: int = NUM_CLASSES,
                   **kwargs) -> dict:
    """An mmpretrain ImageClassifier around ``backbone`` (a GAP neck for a
    backbone that outputs feature maps)."""
    neck = dict(type='GlobalAveragePooling') \
        if backbone['type'] == 'PESwinTransformer' else None
    return dict(type='ImageClassifier', backbone=backbone, neck=neck,
                head=dict(type='LinearClsHead', num_classes=num_classes,
                          in_channels=build(backbone).pe.stage_dims[-1]),
                **kwargs)


def arch_sizes(family: str):
    """Width, depth, heads and MLP width of ``family``'s tiny arch."""
    arch = TINY_BACKBONES[family]['arch']
    return tuple(arch[key] for key in ('embed_dims', 'num_layers',
                                       'num_heads', 'feedforward_channels'))


def build(cfg: dict):
    return MODELS.build(cfg)


def classifier(family: str, method: str, seed: int = 0, **kwargs):
    """A tiny classifier of ``family`` with random weights, in eval mode
    (``kwargs``: backbone arguments)."""
    model = build(classifier_cfg(backbone_cfg(family, method, **kwargs)))
    return randomise(model, seed).eval()


def images(family: str, size=None, batch: int = 2, seed: int = 0):
    """Random images at ``family``'s stored size (or ``size``)."""
    size = size or IMG_SIZES[family][0]
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator)


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every float parameter and buffer random (no identity LN, no zero
    bias; BN variances positive), so a swapped, dropped or re-initialised
    tensor shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if not tensor.dtype.is_floating_point:
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            tensor.data.copy_(noise.abs() + 0.5 if name.endswith(
                'running_var') else noise * 0.2)
    return model


def bicubic_reference(pos: torch.Tensor, src: int, dst, extra: int):
    """``pos`` (1, extra + src*src, C) on a ``dst`` grid: the class rows
    kept, the patch rows resized bicubic (timm's and mmpretrain's rule),
    written with F.interpolate."""
    dst = (dst, dst) if isinstance(dst, int) else tuple(dst)
    grid = pos[:, extra:].reshape(1, src, src, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst, mode='bicubic', align_corners=False)
    return torch.cat([pos[:, :extra], grid.flatten(2).transpose(1, 2)], 1)
