# Table 2 ViT-Lite MPVG: PVG plus LN''(pos_0) added to the Last LN's output
# before the mean (Eq. 11).
_base_ = './_base_/vit-lite-7-4_pe_cifar100-32px.py'

model = dict(backbone=dict(global_pool='avg', pe_cfg=dict(method='mpvg')))
