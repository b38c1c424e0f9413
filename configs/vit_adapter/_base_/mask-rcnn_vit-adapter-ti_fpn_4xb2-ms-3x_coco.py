# Mask R-CNN + FPN with ViT-Adapter-Ti over a PE-method DeiT-Ti, COCO 2017,
# 3x schedule with DETR-style multi-scale training: ViT-Adapter's
# mask_rcnn_deit_adapter_tiny_fpn_3x_coco (detection backbone, fp32, no
# layer-wise lr decay) with the paper's batch of 8 (Table 8: 4 GPUs x 2
# images). The configs beside this file set only the PE method and the
# pre-trained checkpoint.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmmpvg.adapter'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ViTAdapter',
        arch='deit-tiny',  # embed 192, depth 12, heads 3
        img_size=224,  # pre-training size; the PE is resized per input
        patch_size=16,
        pe_cfg=dict(method='default'),
        drop_path_rate=0.1,
        conv_inplane=64,
        n_points=4,
        deform_num_heads=6,
        cffn_ratio=0.25,
        deform_ratio=1.0,
        interaction_indexes=[[0, 2], [3, 5], [6, 8], [9, 11]],
        # Layer-scale gammas on both branches of every ViT layer (1.0).
        layer_scale_init_value=1.0,
        # Window attention (14) in two of every three layers, global in the
        # last layer of each interaction block; grids that are not a multiple
        # of 14 are zero-padded as ViT-Adapter does.
        window_attn=[True, True, False] * 4,
        window_size=[14, 14, None] * 4,
        window_padding='zeros',
        # The detection backbone: the last ViT tokens go to all four levels.
        vit_feature_source='last',
        # No Last LN, as ViT-Adapter (MPVG's Eq. 11 variant: *-lastln_*).
        vit_last_norm=False,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        msda_backend='auto',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/deit-tiny_default_4xb256_in1k/epoch_300.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[192, 192, 192, 192], out_channels=256, num_outs=5))

# DETR / Sparse R-CNN augmentation: short side 480-800 (max 1333) or a
# 400-600 resize + 384-600 crop + 480-800 resize, then a 1024x1024 crop.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [
                dict(type='RandomChoiceResize',
                     scales=[(s, 1333) for s in range(480, 801, 32)],
                     keep_ratio=True)
            ],
            [
                dict(type='RandomChoiceResize',
                     scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop',
                     crop_type='absolute_range',
                     crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize',
                     scales=[(s, 1333) for s in range(480, 801, 32)],
                     keep_ratio=True)
            ],
        ]),
    dict(type='RandomCrop',
         crop_type='absolute_range',
         crop_size=(1024, 1024),
         allow_negative_crop=True),
    dict(type='PackDetInputs'),
]
# Batch 8 in total as in the paper (Table 8: 4 GPUs x 2 images); ViT-Adapter's
# own recipe uses 16 (8 GPUs x 2) with the same lr.
train_dataloader = dict(
    batch_size=2, num_workers=2, dataset=dict(pipeline=train_pipeline))

# 3x: 36 epochs, 500-iteration linear warm-up, x0.1 at epochs 27 and 33.
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[27, 33], gamma=0.1),
]
# AdamW 1e-4, weight decay 0.05, no layer-wise lr decay. ViT-Adapter exempts
# parameters by name: 'level_embed', 'pos_embed', 'norm', 'bias' (its ViT
# norms are norm1/norm2, ours ln1/ln2). So the layer-scale gammas, the
# injectors' gamma and the spatial prior module's BatchNorm weights (named
# stem.1 etc. there, stem.0.bn etc. here) do decay, as there.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        _delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
        weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'level_embed': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.0),
            'norm': dict(decay_mult=0.0),
            '.ln1.': dict(decay_mult=0.0),
            '.ln2.': dict(decay_mult=0.0),
            'bias': dict(decay_mult=0.0),
        }))
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', interval=1,
                    max_keep_ckpts=3, save_best='auto'))
auto_scale_lr = dict(enable=False, base_batch_size=8)
