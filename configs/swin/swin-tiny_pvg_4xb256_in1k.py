# Table 1 Swin-Ti PVG: PE at the input and LN'_l in all 12 blocks (the paper
# includes layer 0 for Swin).
_base_ = './_base_/swin-tiny_pe_in1k.py'

model = dict(backbone=dict(pe_cfg=dict(method='pvg')))
