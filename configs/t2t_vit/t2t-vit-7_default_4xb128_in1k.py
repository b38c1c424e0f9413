# Table 1 T2T-ViT-7 Default: official T2T-ViT-7 (class token, frozen
# sinusoidal PE added to the input, 4,310,222 parameters).
_base_ = './_base_/t2t-vit-7_pe_in1k.py'

model = dict(backbone=dict(pe_cfg=dict(method='default')))
