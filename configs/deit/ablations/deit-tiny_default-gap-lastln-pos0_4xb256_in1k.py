# Fig. 5(b): non-layer-wise GAP model with pos_0 in the Last LN.
_base_ = '../deit-tiny_default_4xb256_in1k.py'

model = dict(
    backbone=dict(global_pool='avg', pe_cfg=dict(last_norm_pos=0)))
