# Table 1 CeiT-Ti Default: the official CeiT-Ti (class token, PE added to the
# input, LCA over the 12 per-layer class tokens).
_base_ = './_base_/ceit-tiny_pe_in1k.py'

model = dict(backbone=dict(global_pool='cls', pe_cfg=dict(method='default')))
