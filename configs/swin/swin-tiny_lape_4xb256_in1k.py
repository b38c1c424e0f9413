# Table 1 Swin-Ti LaPE: no PE at the input; LN'_l(pos) in all 12 blocks.
_base_ = './_base_/swin-tiny_pe_in1k.py'

model = dict(backbone=dict(pe_cfg=dict(method='lape')))
