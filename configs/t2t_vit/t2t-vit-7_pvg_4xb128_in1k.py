# Table 1 T2T-ViT-7 PVG: no class token (196 PE rows), PE added to the
# input and LN'_l(pos_l) in blocks 1..6, global average pooling.
_base_ = './_base_/t2t-vit-7_pe_in1k.py'

model = dict(
    backbone=dict(
        pe_cfg=dict(method='pvg'),
        with_cls_token=False,
        out_type='avg_featmap'))
