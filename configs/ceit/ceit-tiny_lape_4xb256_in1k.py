# Table 1 CeiT-Ti LaPE: class token kept, no PE at the input, LN'_l in all 12
# layers over all 197 PE rows.
_base_ = './_base_/ceit-tiny_pe_in1k.py'

model = dict(backbone=dict(global_pool='cls', pe_cfg=dict(method='lape')))
