# Table 5: MPVG with pos_8 (the PE entering layer 8) in the Last LN.
_base_ = '../deit-tiny_mpvg_4xb256_in1k.py'

model = dict(backbone=dict(pe_cfg=dict(last_norm_pos=8)))
