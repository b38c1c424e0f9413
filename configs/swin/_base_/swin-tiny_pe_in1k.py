# Swin-Ti on ImageNet-1K with a switchable position-embedding method.
# mmpretrain's Swin-T config already runs the official Swin recipe (paper
# Table 7): AdamW (eps 1e-8, betas 0.9/0.999), lr 5e-4 per 512 images (1e-3
# at batch 1024), weight decay 0.05 except on 1-D parameters (norms, biases,
# so also every PE LayerNorm), `absolute_pos_embed` and the relative position
# bias tables, clip-grad 5.0, 20 warm-up epochs from lr 1e-6, cosine to 1e-5
# over 300 epochs, drop path 0.2, label smoothing 0.1, RandAugment m9-mstd0.5,
# random erasing 0.25 (pixel), Mixup 0.8 / CutMix 1.0, bicubic, test
# 256 -> 224 crop, no EMA. This file swaps in PESwinTransformer (Swin-T with
# the absolute PE, `use_abs_pos_embed=True`, in every method).
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'

custom_imports = dict(imports=['mmmpvg.models'], allow_failed_imports=False)

# A kill during a checkpoint write never leaves the only checkpoint corrupt.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(
    backbone=dict(type='PESwinTransformer', pe_cfg=dict(method='default')))

# The paper trains on 4 GPUs: 4 x 256 keeps the official batch of 1024.
train_dataloader = dict(batch_size=256)
val_dataloader = dict(batch_size=256)
test_dataloader = dict(batch_size=256)

# The official scheduler (timm CosineLRScheduler, t_in_epochs=False) decays
# per iteration after the warm-up; mmpretrain's base steps once per epoch.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20,
         end=300, convert_to_iter_based=True),
]
