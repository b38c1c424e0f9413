# The COCO recipe scaled down to learn within minutes on CPU, on generated
# shapes: python tools/make_shapes_data.py coco data/shapes_coco --train 200
# --val 32 --size 64 64 --shape-size 0.3 0.6 (the detection guide).
# Same backbone (ViT-Adapter-Ti, MPVG, from scratch: no pre-trained DeiT; BN
# for SyncBN); FPN and heads at half width; 64x64 images at their size with
# flips only; fewer proposals and RoIs; AdamW at the recipe's lr, 5 epochs.
_base_ = '../mask-rcnn_vit-adapter-ti-mpvg_fpn_4xb2-ms-3x_coco.py'

data_root = 'data/shapes_coco/'
classes = ('square', 'triangle', 'disc')
img_scale = (64, 64)
width = 128  # FPN, RPN and RoI heads (256 in the recipe)
model = dict(
    backbone=dict(
        norm_cfg=dict(type='BN', requires_grad=True),
        # A 64x64 image is a 4x4 token grid, inside one 14x14 window: zero
        # padding would make 180 of its 196 keys padding, so the window is
        # the grid itself (= global attention here).
        window_padding='masked',
        init_cfg=None),
    neck=dict(out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width,
                       num_classes=len(classes))),
    # The RoI heads cost most of a CPU step (the mask head's four convs run
    # on every positive RoI): 16 RoIs an image (512), up to 4 positive.
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=100),
                   rcnn=dict(sampler=dict(num=16))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100),
                  rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
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

optim_wrapper = dict(optimizer=dict(lr=1e-4))
max_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[max_epochs - 1], gamma=0.1),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_epochs, save_best=None))
