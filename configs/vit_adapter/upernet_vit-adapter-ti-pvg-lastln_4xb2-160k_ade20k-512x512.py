# Our extension, not ViT-Adapter's structure (it has no Last LN).
# The control for the MPVG Last-LN config: PVG with the same plain Last LN
# on the last ViT tokens, so the two differ only in MPVG's LN''(pos_0) term
# (see mmmpvg/adapter/vit_adapter.py). Everything else as in
# upernet_vit-adapter-ti-pvg_4xb2-160k_ade20k-512x512.py.
_base_ = './upernet_vit-adapter-ti-pvg_4xb2-160k_ade20k-512x512.py'

model = dict(backbone=dict(vit_last_norm=True))
