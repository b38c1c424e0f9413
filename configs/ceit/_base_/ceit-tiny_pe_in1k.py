# CeiT-Ti on ImageNet-1K with a switchable position-embedding method.
# mmpretrain's DeiT-Ti config supplies the DeiT data pipeline CeiT's main.py
# also uses (RandomResizedCrop bicubic, flip, RandAugment m9-mstd0.5 inc,
# random erasing 0.25 pixel, test resize 256 -> crop 224), Mixup 0.8 /
# CutMix 1.0 and label smoothing 0.1; this file swaps in PECeiT and sets the
# rest of the official CeiT recipe (paper Table 7).
_base_ = 'mmpretrain::deit/deit-tiny_4xb256_in1k.py'

custom_imports = dict(imports=['mmmpvg.models'], allow_failed_imports=False)

# A kill during a checkpoint write never leaves the only checkpoint corrupt.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(
    backbone=dict(
        _delete_=True,
        type='PECeiT',
        arch='ceit-tiny',
        img_size=224,
        drop_path_rate=0.1,
        global_pool='cls',
        pe_cfg=dict(method='default')),
    # The backbone pools (the LCA token), so a plain linear head; truncated
    # normal std 0.02 as the official head.
    head=dict(
        _delete_=True,
        type='LinearClsHead',
        num_classes=1000,
        in_channels=192,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02)))

# 4 GPUs x 256 = the official batch of 1024, with DeiT's repeated
# augmentation (3 repeats, on by default in CeiT's main.py).
train_dataloader = dict(
    batch_size=256, sampler=dict(type='RepeatAugSampler', shuffle=True))
val_dataloader = dict(batch_size=256)
test_dataloader = dict(batch_size=256)

# Table 7: AdamW, lr 5e-4 per 512 images (main.py's linear scaling, so 1e-3
# at batch 1024), weight decay 0.05 except on 1-D parameters (norms, BN,
# biases, so also every PE LayerNorm), `pos_embed` and `cls_token`, as
# timm's optimizer factory with the model's no_weight_decay(); no gradient
# clipping.
optim_wrapper = dict(
    optimizer=dict(lr=5e-4 * 1024 / 512, weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0)
        }),
    clip_grad=None)
# 5 warm-up epochs from 1e-6, cosine to 1e-5, 300 epochs (no cooldown:
# main.py's loop stops at --epochs); main.py steps its timm scheduler once
# an epoch, warm-up included.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5,
         end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)

# Model EMA with decay 0.99996 (timm ModelEma, on in main.py).
custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
