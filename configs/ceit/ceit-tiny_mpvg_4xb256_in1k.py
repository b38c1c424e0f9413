# Table 1 CeiT-Ti MPVG: PVG plus LN''(pos_0) added after the Last LN (Eq. 11,
# pooled like the tokens).
_base_ = './_base_/ceit-tiny_pe_in1k.py'

model = dict(backbone=dict(global_pool='avg', pe_cfg=dict(method='mpvg')))
