# T2T-ViT-7 on ImageNet-1K with a switchable position-embedding method.
# mmpretrain's T2T-ViT config supplies T2T's (timm's) augmentation
# (RandAugment m9-mstd0.5 increasing, Mixup 0.8, CutMix 1.0, label smoothing
# 0.1, random erasing 0.25, bicubic, test 248 -> 224 crop, i.e. crop_pct 0.9)
# and EMAHook(momentum=4e-5) = the official EMA decay 0.99996 per iteration.
# This file swaps in PET2TViT (official T2T-ViT-7: Performer stem, frozen
# sinusoidal PE) and sets the official command's recipe (Table 7):
#   -b 128 (x 4 GPUs) --lr 1e-3 --weight-decay .03 --amp
_base_ = 'mmpretrain::t2t_vit/t2t-vit-t-14_8xb64_in1k.py'

custom_imports = dict(imports=['mmmpvg.models'], allow_failed_imports=False)

# A kill during a checkpoint write never leaves the only checkpoint corrupt.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(
    backbone=dict(
        _delete_=True,
        type='PET2TViT',
        arch='t2t-vit-7',
        img_size=224,
        drop_path_rate=0.1,
        pe_cfg=dict(method='default')),
    head=dict(in_channels=256))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = dict(batch_size=128)

# AdamW, lr 1e-3 as given (timm's train.py does not scale it; 4 x 128 = 512
# is also auto_scale_lr's base), weight decay 0.03 except on 1-D parameters
# (norms -- the PE LayerNorms too --, biases) and the class token, as timm's
# optimizer factory does. --amp: dynamic loss scaling.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.03),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            # only matters with pos_source='learnable'
            '.pos_embed': dict(decay_mult=0.0),
        }))

# timm's epoch-stepped CosineLRScheduler: warm-up from 1e-6 over 10 epochs,
# cosine to min_lr 1e-5 at epoch 300, then 10 cool-down epochs at min_lr
# (310 epochs run). mmengine keeps the last scheduler's value after its
# end, so the cool-down needs no scheduler (mmpretrain's t2t configs'
# ConstantLR(factor=0.1) would multiply min_lr by 0.1).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=10),
    dict(type='CosineAnnealingLR', T_max=290, eta_min=1e-5, by_epoch=True,
         begin=10, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=310, val_interval=1)
auto_scale_lr = dict(base_batch_size=512)
