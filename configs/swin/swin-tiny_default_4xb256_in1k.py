# Table 1 Swin-Ti Default: Swin-T with its absolute PE added once.
_base_ = './_base_/swin-tiny_pe_in1k.py'

model = dict(backbone=dict(pe_cfg=dict(method='default')))
