# The COCO 3x+MS recipe scaled down for a CPU demo on generated shapes
# (python tools/make_shapes_data.py coco data/shapes_coco): same model and
# augmentation branches at 1/5 scale, BN instead of SyncBN, no pre-trained
# DeiT, fewer proposals, 6 epochs.
_base_ = '../mask-rcnn_vit-adapter-ti-mpvg_fpn_4xb2-ms-3x_coco.py'

data_root = 'data/shapes_coco/'
classes = ('square', 'triangle', 'disc')
model = dict(
    backbone=dict(norm_cfg=dict(type='BN', requires_grad=True),
                  init_cfg=None),
    roi_head=dict(
        bbox_head=dict(num_classes=len(classes)),
        mask_head=dict(num_classes=len(classes))),
    train_cfg=dict(rpn_proposal=dict(max_per_img=100),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(max_per_img=100), rcnn=dict(max_per_img=20)))

scales = [(s, 192) for s in range(96, 161, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(96, 192)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range',
                     crop_size=(64, 96), allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=scales,
                     keep_ratio=True),
            ],
        ]),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=(128, 128),
         allow_negative_crop=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(192, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='annotations/train.json',
                 data_prefix=dict(img='train/'),
                 metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='annotations/val.json',
                 data_prefix=dict(img='val/'),
                 metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=4e-4))
max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=30),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[4, 5], gamma=0.1),
]
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
