# Table 2 ViT-Lite LaPE: class token kept, no PE at the input, LN'_l in all 7
# layers over all 65 PE rows (3,743,588 parameters; the paper prints 3.744,
# see configs/vit_lite/README.md).
_base_ = './_base_/vit-lite-7-4_pe_cifar100-32px.py'

model = dict(backbone=dict(global_pool='cls', pe_cfg=dict(method='lape')))
