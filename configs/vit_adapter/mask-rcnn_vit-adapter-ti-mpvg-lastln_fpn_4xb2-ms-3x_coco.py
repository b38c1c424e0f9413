# Our extension, not ViT-Adapter's structure (it has no Last LN).
# MPVG's Eq. 11 inside the adapter: the last ViT tokens leave through
# LN(x) + LN''(pos_0)
# (see mmmpvg/adapter/vit_adapter.py). Everything else as in
# mask-rcnn_vit-adapter-ti-mpvg_fpn_4xb2-ms-3x_coco.py.
_base_ = './mask-rcnn_vit-adapter-ti-mpvg_fpn_4xb2-ms-3x_coco.py'

model = dict(backbone=dict(vit_last_norm=True))
