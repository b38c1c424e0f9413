# Table 2 T2T-ViT-7 LaPE on CIFAR-100: fine-tunes the LaPE ImageNet
# EMA checkpoint (configs/t2t_vit/t2t-vit-7_lape_4xb128_in1k.py).
_base_ = './_base_/t2t-vit-7_pe_transfer_cifar100-224px.py'

imagenet_checkpoint = 'work_dirs/t2t-vit-7_lape_4xb128_in1k/epoch_310.pth'

model = dict(
    backbone=dict(
        pe_cfg=dict(method='lape'),
        frozen_parts=['cls_token', 'pos_embed', 'norm'],
        init_cfg=dict(checkpoint=imagenet_checkpoint)))
