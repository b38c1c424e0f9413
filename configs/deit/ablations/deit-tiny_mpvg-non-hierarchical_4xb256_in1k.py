# Table 6: MPVG with pos_l = LN'_l(pos_0) instead of LN'_l(pos_{l-1}).
_base_ = '../deit-tiny_mpvg_4xb256_in1k.py'

model = dict(backbone=dict(pe_cfg=dict(hierarchical=False)))
