# Table 1 T2T-ViT-7 MPVG: PVG plus LN''(pos_0) (256 dims) added to the
# final norm's output before global average pooling (Eq. 11).
_base_ = './_base_/t2t-vit-7_pe_in1k.py'

model = dict(
    backbone=dict(
        pe_cfg=dict(method='mpvg'),
        with_cls_token=False,
        out_type='avg_featmap'))
