# DeiT-Ti on ImageNet-1K with a switchable position-embedding method.
# mmpretrain's DeiT config supplies DeiT's augmentation (RandAugment, Mixup
# 0.8, CutMix 1.0, label smoothing 0.1, random erasing) and AdamW; this file
# swaps in PEVisionTransformer and sets the paper's Table 7 schedule.
_base_ = 'mmpretrain::deit/deit-tiny_4xb256_in1k.py'

custom_imports = dict(imports=['mmmpvg.models'], allow_failed_imports=False)

# A kill during a checkpoint write never leaves the only checkpoint corrupt.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(
    backbone=dict(
        _delete_=True,
        type='PEVisionTransformer',
        arch='deit-tiny',
        img_size=224,
        patch_size=16,
        drop_path_rate=0.1,
        global_pool='avg',
        pe_cfg=dict(method='mpvg')),
    head=dict(in_channels=192))

# Table 7: AdamW, lr 5e-4 per 512 images (DeiT's linear scaling, so 1e-3 at
# batch 1024), cosine, weight decay 0.05, 300 epochs, 5 warm-up epochs.
optim_wrapper = dict(
    optimizer=dict(lr=5e-4 * 1024 / 512, weight_decay=0.05),
    # PE LayerNorms are LayerNorms: norm_decay_mult=0 already covers them.
    paramwise_cfg=dict(custom_keys={
        '.cls_token': dict(decay_mult=0.0),
        '.pos_embed': dict(decay_mult=0.0)
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5,
         end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)
