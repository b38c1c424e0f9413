# Table 1 CeiT-Ti PVG: no class token (LCA over the per-layer token means),
# PE at the input and LN'_l in all 12 layers (layer 0 included, as the paper
# does for Swin: the one reading with Table 1's 6.361 M, see this folder's
# README).
_base_ = './_base_/ceit-tiny_pe_in1k.py'

model = dict(backbone=dict(global_pool='avg', pe_cfg=dict(method='pvg')))
