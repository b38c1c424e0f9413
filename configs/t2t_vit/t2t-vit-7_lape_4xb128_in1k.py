# Table 1 T2T-ViT-7 LaPE: class token; the PE reaches every block through
# its own LN'_l (l = 0..6), nothing is added to the input.
_base_ = './_base_/t2t-vit-7_pe_in1k.py'

model = dict(backbone=dict(pe_cfg=dict(method='lape')))
