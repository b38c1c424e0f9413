_base_ = './_base_/mask-rcnn_vit-adapter-ti_fpn_4xb2-ms-3x_coco.py'

# DeiT-Ti pre-trained with configs/deit/deit-tiny_lape_4xb256_in1k.py
# (class token: the adapter drops it and its PE row when loading).
model = dict(
    backbone=dict(
        pe_cfg=dict(method='lape'),
        init_cfg=dict(checkpoint='work_dirs/deit-tiny_lape_4xb256_in1k/'
                      'epoch_300.pth')))
