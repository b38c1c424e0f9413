_base_ = './_base_/upernet_vit-adapter-ti_8xb1-160k_ade20k-512x512.py'

# DeiT-Ti pre-trained with configs/deit/deit-tiny_mpvg_4xb256_in1k.py
# (GAP).
model = dict(
    backbone=dict(
        pe_cfg=dict(method='mpvg'),
        init_cfg=dict(checkpoint='work_dirs/deit-tiny_mpvg_4xb256_in1k/'
                      'epoch_300.pth')))
