# ViT-Lite-7/4 on CIFAR-100 at 32x32 with a switchable position-embedding
# method: Compact-Transformers' `vit_7_4_32` with its CIFAR-100 recipe
# (its configs/datasets/cifar100.yml = paper Table 7) on mmpretrain's
# CIFAR-100 data set.
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(
    imports=['mmmpvg.models', 'mmmpvg.datasets'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='PEViTLite',
        arch='vit-lite-7',
        img_size=32,
        patch_size=4,
        attn_drop_rate=0.1,
        drop_path_rate=0.1,
        global_pool='cls',
        pe_cfg=dict(method='default')),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=256,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02)),
    # Mixup 0.8 / CutMix 1.0, one of them per batch with equal chance
    # (timm: mixup_prob 1.0, switch_prob 0.5, batch mode).
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

# CIFAR-100 statistics of cifar100.yml (x 255; CIFAR images load as RGB).
rgb_mean = [0.5071 * 255, 0.4867 * 255, 0.4408 * 255]
rgb_std = [0.2675 * 255, 0.2565 * 255, 0.2761 * 255]
data_preprocessor = dict(
    num_classes=100, mean=rgb_mean, std=rgb_std, to_rgb=False)

# timm's create_transform for img 32: RandomResizedCrop scale (0.8, 1),
# flip, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 (pixel);
# test: crop_pct 1.0 at 32 leaves the image as it is.
train_pipeline = [
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.8, 1.0),
         backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2,
         total_level=10, magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in rgb_mean],
                      interpolation='bicubic')),
    # timm erases normalised pixels with N(0, 1) noise: mean + std * N(0, 1)
    # before normalisation.
    dict(type='RandomErasing', erase_prob=0.25, mode='rand',
         min_area_ratio=0.02, max_area_ratio=1 / 3, fill_color=rgb_mean,
         fill_std=rgb_std),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

# AdamW lr 6e-4 (absolute, batch 128), weight decay 0.06 except on 1-D
# parameters (timm's optimizer factory; ViT-Lite lists no other
# exceptions, so its PE and class token are decayed); no clipping, no EMA.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=6e-4, weight_decay=0.06, eps=1e-8,
                   betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       flat_decay_mult=0.0))
# timm steps once an epoch: 10 warm-up epochs from 1e-6, cosine to 1e-5 at
# epoch 300, then 10 cooldown epochs at 1e-5 (the lr holds after `end`).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 6e-4, by_epoch=True, end=10),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=10,
         end=300),
]
# CCT's train.py validates after every epoch and keeps the best.
train_cfg = dict(by_epoch=True, max_epochs=310, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=128)

default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', interval=10,
                    max_keep_ckpts=3, save_best='auto'))
