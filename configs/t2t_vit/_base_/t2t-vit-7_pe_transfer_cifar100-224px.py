# T2T-ViT-7 ImageNet -> CIFAR-100 transfer (Table 2), the official
# transfer_learning.py recipe: each method's own ImageNet EMA checkpoint,
# CIFAR resized to 224 px, SGD with T2T's parameter groups, 60 epochs,
# best test accuracy reported.
_base_ = [
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmmpvg.models'], allow_failed_imports=False)

# The ImageNet run of the same method (configs/t2t_vit/*_in1k.py). Its
# checkpoints hold the EMA weights in `state_dict` (mmengine's EMAHook
# swaps them in when saving), which is what the official code loads
# (`state_dict_ema`). Only `backbone.*` is read: the 1000-class head is
# dropped and the 100-class head keeps its fresh initialisation, as the
# official code deletes `head.*` for num_classes != 1000.
imagenet_checkpoint = 'work_dirs/t2t-vit-7_default_4xb128_in1k/epoch_310.pth'

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='PET2TViT',
        arch='t2t-vit-7',
        img_size=224,
        drop_path_rate=0.1,
        pe_cfg=dict(method='default'),
        # In no optimizer group officially, so frozen: the class token,
        # pos_embed (frozen anyway unless pos_source='learnable') and the
        # final norm; MPVG adds its LN'' (a top-level norm like the final
        # one).
        frozen_parts=['cls_token', 'pos_embed', 'norm'],
        init_cfg=dict(
            type='Pretrained',
            checkpoint=imagenet_checkpoint,
            prefix='backbone.')),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=100,
        in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)))

data_preprocessor = dict(
    num_classes=100,
    mean=[0.4914 * 255, 0.4822 * 255, 0.4465 * 255],
    std=[0.2023 * 255, 0.1994 * 255, 0.2010 * 255],
    to_rgb=False)  # mmpretrain's CIFAR loader gives RGB already

# torchvision's Resize(224) (bilinear, PIL), RandomCrop(224, padding=28),
# RandomHorizontalFlip.
train_pipeline = [
    dict(type='Resize', scale=224, backend='pillow', interpolation='bilinear'),
    dict(type='RandomCrop', crop_size=224, padding=28),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=224, backend='pillow', interpolation='bilinear'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=100,
    num_workers=8,
    dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# SGD (momentum 0.9, weight decay 5e-4 on every parameter), lr 5e-2 for
# the head and transfer_ratio 0.01 x lr for the T2T stem and the blocks.
# The PE LayerNorms LN'_l sit inside the blocks in the paper (and in
# LaPE's code, `blocks.i.pe_norm`), so they go with the blocks at 0.01 x.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=5e-2, momentum=0.9, weight_decay=5e-4),
    paramwise_cfg=dict(
        custom_keys={
            'backbone.tokens_to_token': dict(lr_mult=0.01),
            'backbone.encoder': dict(lr_mult=0.01),
            'backbone.pe.layer_norms': dict(lr_mult=0.01),
        }))
# torch's CosineAnnealingLR(T_max=60, eta_min=2e-4), stepped per epoch;
# eta_min is absolute for every group, as in the official code.
param_scheduler = dict(
    type='CosineAnnealingLR', T_max=60, eta_min=2e-4, by_epoch=True,
    begin=0, end=60)
train_cfg = dict(by_epoch=True, max_epochs=60, val_interval=1)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    # The official script reports the best test accuracy over the epochs.
    checkpoint=dict(
        type='AtomicCheckpointHook', interval=1, max_keep_ckpts=1,
        save_best='accuracy/top1'))
auto_scale_lr = dict(base_batch_size=128)
