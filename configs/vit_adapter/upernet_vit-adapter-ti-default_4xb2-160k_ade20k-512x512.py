_base_ = './_base_/upernet_vit-adapter-ti_4xb2-160k_ade20k-512x512.py'

# DeiT-Ti pre-trained with configs/deit/deit-tiny_default_4xb256_in1k.py
# (class token: the adapter drops it and its PE row when loading).
model = dict(
    backbone=dict(
        pe_cfg=dict(method='default'),
        init_cfg=dict(checkpoint='work_dirs/deit-tiny_default_4xb256_in1k/'
                      'epoch_300.pth')))
