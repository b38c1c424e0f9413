# Table 1 Swin-Ti MPVG: PVG plus LN''(pos_0) (768 dims, pos_0 carried by the
# PatchMergings) added to the last stage's norm before GAP (Eq. 11).
_base_ = './_base_/swin-tiny_pe_in1k.py'

model = dict(backbone=dict(pe_cfg=dict(method='mpvg')))
