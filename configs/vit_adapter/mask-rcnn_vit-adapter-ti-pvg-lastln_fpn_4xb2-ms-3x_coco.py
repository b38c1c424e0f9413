# Our extension, not ViT-Adapter's structure (it has no Last LN).
# The control for the MPVG Last-LN config: PVG with the same plain Last LN
# on the last ViT tokens, so the two differ only in MPVG's LN''(pos_0) term
# (see mmmpvg/adapter/vit_adapter.py). Everything else as in
# mask-rcnn_vit-adapter-ti-pvg_fpn_4xb2-ms-3x_coco.py.
_base_ = './mask-rcnn_vit-adapter-ti-pvg_fpn_4xb2-ms-3x_coco.py'

model = dict(backbone=dict(vit_last_norm=True))
