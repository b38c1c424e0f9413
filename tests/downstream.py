"""The ViT-Adapter configs as CPU smoke runs on generated data: what
``--cfg-options`` change (BN for SyncBN, no pre-trained checkpoint, small
images, fewer proposals, the generated data set), shared by the tests that
train, test and resume them. Schedules are left to each test.

UperNet's recipe trains in fp16 (``AmpOptimWrapper``), which needs CUDA:
:func:`upernet_fp32_config` is the shipped config with a plain
``OptimWrapper`` that keeps its optimizer, constructor and paramwise
settings (CPU bfloat16 autocast measured 4x slower here)."""
import os.path as osp

from mmmpvg.datasets.shapes import (SHAPE_CLASSES, make_ade20k_shapes,
                                    make_coco_shapes)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DET_CONFIG = osp.join(
    REPO, 'configs/vit_adapter/'
    'mask-rcnn_vit-adapter-ti-mpvg_fpn_4xb2-ms-3x_coco.py')
SEG_CONFIG = osp.join(
    REPO, 'configs/vit_adapter/'
    'upernet_vit-adapter-ti-lape_4xb2-160k_ade20k-512x512.py')
# Evaluate once, with tools/test.py (a val loop would repeat it).
NO_VAL = ('val_dataloader=None', 'val_evaluator=None', 'val_cfg=None')


def loader_options(prefix, root, batch_size):
    return (f'{prefix}.batch_size={batch_size}', f'{prefix}.num_workers=0',
            f'{prefix}.persistent_workers=False',
            f'{prefix}.dataset.data_root={root}')


def mask_rcnn_smoke_options(root, num_train=4, num_val=2):
    """Options for DET_CONFIG on a COCO-format shapes set made in ``root``.
    """
    ann_files = make_coco_shapes(str(root), splits=(('train', num_train),
                                                    ('val', num_val)))
    classes = '[' + ','.join(SHAPE_CLASSES) + ']'
    scales = '[(128,192),(160,192)]'
    pipeline = 'train_dataloader.dataset.pipeline'
    return (
        'model.backbone.norm_cfg.type=BN',
        'model.backbone.init_cfg=None',
        f'model.roi_head.bbox_head.num_classes={len(SHAPE_CLASSES)}',
        f'model.roi_head.mask_head.num_classes={len(SHAPE_CLASSES)}',
        # Fewer proposals and RoIs: the heads dominate CPU time otherwise.
        'model.train_cfg.rpn_proposal.max_per_img=100',
        'model.train_cfg.rcnn.sampler.num=64',
        'model.test_cfg.rpn.max_per_img=100',
        'model.test_cfg.rcnn.max_per_img=20',
        *loader_options('train_dataloader', root, 2),
        'train_dataloader.dataset.ann_file=annotations/train.json',
        'train_dataloader.dataset.data_prefix.img=train/',
        f'train_dataloader.dataset.metainfo.classes={classes}',
        # The recipe's two multi-scale branches and final crop, scaled down.
        f'{pipeline}.3.transforms.0.0.scales={scales}',
        f'{pipeline}.3.transforms.1.0.scales=[(96,192)]',
        f'{pipeline}.3.transforms.1.1.crop_size=(64,96)',
        f'{pipeline}.3.transforms.1.2.scales={scales}',
        f'{pipeline}.4.crop_size=(128,128)',
        'default_hooks.logger.interval=1',
        *NO_VAL,
        *loader_options('test_dataloader', root, 1),
        'test_dataloader.dataset.ann_file=annotations/val.json',
        'test_dataloader.dataset.data_prefix.img=val/',
        f'test_dataloader.dataset.metainfo.classes={classes}',
        'test_dataloader.dataset.pipeline.1.scale=(192,128)',
        f'test_evaluator.ann_file={ann_files["val"]}',
    )


def upernet_smoke_options(root, num_train=4, num_val=2):
    """Options for SEG_CONFIG on an ADE20K-format shapes set made in
    ``root``."""
    make_ade20k_shapes(str(root), splits=(('training', num_train),
                                          ('validation', num_val)))
    return (
        'model.backbone.norm_cfg.type=BN',
        'model.backbone.init_cfg=None',
        'model.decode_head.norm_cfg.type=BN',
        'model.auxiliary_head.norm_cfg.type=BN',
        'model.data_preprocessor.size=(64,64)',
        'model.test_cfg.crop_size=(64,64)',
        'model.test_cfg.stride=(32,32)',
        *loader_options('train_dataloader', root, 2),
        'train_dataloader.dataset.pipeline.2.scale=(256,64)',
        'train_dataloader.dataset.pipeline.3.crop_size=(64,64)',
        'default_hooks.logger.interval=1',
        *NO_VAL,
        *loader_options('test_dataloader', root, 1),
        # 96x128 images -> 64x96: two overlapping 64x64 sliding windows.
        'test_dataloader.dataset.pipeline.1.scale=(256,64)',
    )


def upernet_fp32_config(directory):
    """SEG_CONFIG in fp32, written to ``directory``; returns its path."""
    path = directory / 'upernet_fp32.py'
    path.write_text(
        f'_base_ = {SEG_CONFIG!r}\n'
        'optim_wrapper = dict(\n'
        '    _delete_=True, type="OptimWrapper",\n'
        '    optimizer={{_base_.optim_wrapper.optimizer}},\n'
        '    constructor={{_base_.optim_wrapper.constructor}},\n'
        '    paramwise_cfg={{_base_.optim_wrapper.paramwise_cfg}})\n')
    return path
