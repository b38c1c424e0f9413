# Table 6: MPVG without adding PE to the tokens before layer 0 (no "x+PE").
_base_ = '../deit-tiny_mpvg_4xb256_in1k.py'

model = dict(backbone=dict(pe_cfg=dict(add_to_input=False)))
