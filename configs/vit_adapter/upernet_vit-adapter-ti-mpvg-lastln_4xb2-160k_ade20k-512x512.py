# Our extension, not ViT-Adapter's structure (it has no Last LN).
# MPVG's Eq. 11 inside the adapter: the last ViT tokens leave through
# LN(x) + LN''(pos_0)
# (see mmmpvg/adapter/vit_adapter.py). Everything else as in
# upernet_vit-adapter-ti-mpvg_4xb2-160k_ade20k-512x512.py.
_base_ = './upernet_vit-adapter-ti-mpvg_4xb2-160k_ade20k-512x512.py'

model = dict(backbone=dict(vit_last_norm=True))
