# UperNet (+ auxiliary FCN head) with ViT-Adapter-Ti over a PE-method DeiT-Ti,
# ADE20K 150 classes, 512x512 crops, 160k iterations: ViT-Adapter's
# upernet_deit_adapter_tiny_512_160k_ade20k (segmentation backbone, fp16
# with dynamic loss scaling, layer-wise lr decay) with the paper's batch of 8
# (Table 9: 4 GPUs x 2 images). The configs beside this file set only the PE
# method and the pre-trained checkpoint.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmmpvg.adapter'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
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
        window_attn=False,  # global attention in every layer
        # The segmentation backbone: the ViT tokens after interaction block
        # i (layers 2, 5, 8, 11) go to level i (1/4, 1/8, 1/16, 1/32).
        vit_feature_source='per_interaction',
        # No Last LN, as ViT-Adapter (MPVG's Eq. 11 variant: *-lastln_*).
        vit_last_norm=False,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        msda_backend='auto',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/deit-tiny_default_4xb256_in1k/epoch_300.pth',
            prefix='backbone.')),
    decode_head=dict(in_channels=[192, 192, 192, 192], num_classes=150),
    auxiliary_head=dict(in_channels=192, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# Inputs must be multiples of 32 (the adapter's 1/32 level).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# Batch 8 in total as in the paper (Table 9: 4 GPUs x 2 images); ViT-Adapter's
# own recipe uses 16 (8 GPUs x 2) with the same lr.
train_dataloader = dict(batch_size=2, num_workers=2)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# AdamW 12e-5, weight decay 0.01, layer-wise lr decay 0.95 over the 12 ViT
# layers. ViT-Adapter's LayerDecayOptimizerConstructor exempts every 1-D
# parameter (biases, norms, layer-scale gammas) from decay; its exemption of
# 'pos_embed' by name never matches ('backbone.pos_embed'), so the PE and the
# level embeddings decay, as here. Mixed precision (fp16) with a dynamic loss
# scale starting at 512, as ViT-Adapter's `fp16 = dict(loss_scale=...)`;
# it needs CUDA (on CPU use type='CPUAmpOptimWrapper', bfloat16).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale=dict(init_scale=512),
    optimizer=dict(type='AdamW', lr=12e-5, betas=(0.9, 0.999),
                   weight_decay=0.01),
    constructor='BackboneLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.95, flat_decay_mult=0.0))
# Poly (power 1) after a 1500-iteration linear warm-up.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500,
         end=160000),
]
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False,
                    interval=16000, max_keep_ckpts=1,
                    save_best='mIoU'))
