_base_ = './_base_/upernet_vit-adapter-ti_4xb2-160k_ade20k-512x512.py'

# DeiT-Ti pre-trained with configs/deit/deit-tiny_mpvg_4xb256_in1k.py
# (GAP). Its Last LN and LN''(pos_0) are not used, as ViT-Adapter has no
# Last LN: the adapter then has PVG's structure (Eq. 11 variant: *-lastln_*).
model = dict(
    backbone=dict(
        pe_cfg=dict(method='mpvg'),
        init_cfg=dict(checkpoint='work_dirs/deit-tiny_mpvg_4xb256_in1k/'
                      'epoch_300.pth')))
