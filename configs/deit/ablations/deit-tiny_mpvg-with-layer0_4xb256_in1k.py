# Table 6: MPVG that also delivers PE to layer 0.
_base_ = '../deit-tiny_mpvg_4xb256_in1k.py'

model = dict(backbone=dict(pe_cfg=dict(include_layer0=True)))
