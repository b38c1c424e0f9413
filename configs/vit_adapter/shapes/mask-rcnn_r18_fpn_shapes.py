# Control for the Mask R-CNN shapes demo: the same data, heads, schedule and
# optimizer with a ResNet-18 from scratch in place of ViT-Adapter-Ti: what a
# standard conv backbone reaches with this recipe (the detection guide,
# docs/en/user_guides/detection_segmentation.md).
_base_ = './mask-rcnn_vit-adapter-ti-mpvg_fpn_shapes.py'

model = dict(
    backbone=dict(
        _delete_=True, type='mmdet.ResNet', depth=18, num_stages=4,
        out_indices=(0, 1, 2, 3), norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False, style='pytorch', init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]))
