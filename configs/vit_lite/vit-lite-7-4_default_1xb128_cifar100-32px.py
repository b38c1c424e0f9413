# Table 2 ViT-Lite Default: Compact-Transformers' vit_7_4_32 (class token,
# learnable PE added to the input).
_base_ = './_base_/vit-lite-7-4_pe_cifar100-32px.py'

model = dict(backbone=dict(global_pool='cls', pe_cfg=dict(method='default')))
