# Table 2 T2T-ViT-7 MPVG on CIFAR-100: fine-tunes the MPVG ImageNet
# EMA checkpoint (configs/t2t_vit/t2t-vit-7_mpvg_4xb128_in1k.py).
_base_ = './_base_/t2t-vit-7_pe_transfer_cifar100-224px.py'

imagenet_checkpoint = 'work_dirs/t2t-vit-7_mpvg_4xb128_in1k/epoch_310.pth'

model = dict(
    backbone=dict(
        pe_cfg=dict(method='mpvg'),
        with_cls_token=False,
        out_type='avg_featmap',
        frozen_parts=['pos_embed', 'norm', 'pe.last_pos_norm'],
        init_cfg=dict(checkpoint=imagenet_checkpoint)))
