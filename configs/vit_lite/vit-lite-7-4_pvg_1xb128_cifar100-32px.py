# Table 2 ViT-Lite PVG: no class token, mean of the 64 tokens after the Last
# LN, PE at the input and LN'_l in layers 1..6.
_base_ = './_base_/vit-lite-7-4_pe_cifar100-32px.py'

model = dict(backbone=dict(global_pool='avg', pe_cfg=dict(method='pvg')))
