# The ADE20K recipe scaled down for a CPU demo on generated shapes
# (python tools/make_shapes_data.py ade20k data/shapes_ade20k --train 64
# --val 16 --size 96 128): same model with heads for the data's 4 classes,
# BN instead of SyncBN, fp32, no pre-trained DeiT, 64x64 crops, lr 1e-3,
# 300 iterations.
_base_ = '../upernet_vit-adapter-ti-mpvg_4xb2-160k_ade20k-512x512.py'

data_root = 'data/shapes_ade20k'
# The generator's classes (label k + 1 in the PNGs, 0 ignored), coloured as
# drawn, so heads, mIoU and drawings cover these four and no ADE20K class.
metainfo = dict(
    classes=('background', 'square', 'triangle', 'disc'),
    palette=[(40, 40, 40), (60, 60, 220), (60, 200, 60), (230, 90, 60)])
num_classes = len(metainfo['classes'])
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(norm_cfg=norm_cfg, num_classes=num_classes),
    auxiliary_head=dict(norm_cfg=norm_cfg, num_classes=num_classes),
    test_cfg=dict(crop_size=crop_size, stride=(32, 32)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 64), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(type='BaseSegDataset', data_root=data_root,
                 metainfo=metainfo, img_suffix='.jpg', seg_map_suffix='.png',
                 reduce_zero_label=True, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(type='BaseSegDataset', data_root=data_root,
                 metainfo=metainfo, img_suffix='.jpg', seg_map_suffix='.png',
                 reduce_zero_label=True, pipeline=test_pipeline))
test_dataloader = val_dataloader

# fp32: the recipe's fp16 AmpOptimWrapper needs CUDA.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999),
                   weight_decay=0.01),
    constructor='BackboneLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.95, flat_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=30),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=30,
         end=300),
]
train_cfg = dict(max_iters=300, val_interval=100)
default_hooks = dict(
    logger=dict(interval=25), checkpoint=dict(interval=100, save_best=None))
