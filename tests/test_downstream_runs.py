"""Real mmdet / mmseg runs of the ViT-Adapter configs on generated data.

Each config is used as shipped, changed only by ``--cfg-options`` for a CPU
smoke run: BN for SyncBN, no pre-trained checkpoint, small images, fewer
proposals, a few iterations, the generated data set; for UperNet also fp32
instead of the recipe's fp16 ``AmpOptimWrapper``, which needs CUDA (a
config on top of the shipped one that keeps its optimizer, constructor and
paramwise settings; CPU bfloat16 autocast is emulated, i.e. several times
slower, on CPUs without bf16 instructions). tools/train.py trains
through MMEngine's Runner; tools/test.py then evaluates the saved
checkpoint with mmdet's ``CocoMetric`` (bbox + segm mAP) and mmseg's
``IoUMetric`` (mIoU).
"""
import math
import os.path as osp

import pytest

from mmmpvg.datasets.shapes import (SHAPE_CLASSES, make_ade20k_shapes,
                                    make_coco_shapes)

pytestmark = pytest.mark.usefixtures('one_thread')

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


def train_then_test(make_runner, train_tool, test_tool, config, options,
                    tmp_path, checkpoint_name):
    runner = make_runner(train_tool, config, tmp_path / 'train', options)
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    checkpoint = tmp_path / 'train' / checkpoint_name
    tester = make_runner(test_tool, config, tmp_path / 'test', options,
                         checkpoint)
    return runner, loss, tester.test()


def test_mask_rcnn_vit_adapter_trains_and_evaluates_on_coco_format(
        tmp_path, make_runner, train_tool, test_tool):
    root = tmp_path / 'coco'
    ann_files = make_coco_shapes(str(root), splits=(('train', 4), ('val',
                                                                   2)))
    classes = '[' + ','.join(SHAPE_CLASSES) + ']'
    scales = '[(128,192),(160,192)]'
    pipeline = 'train_dataloader.dataset.pipeline'
    options = (
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
        'train_cfg.max_epochs=1',
        'default_hooks.logger.interval=1',
        *NO_VAL,
        *loader_options('test_dataloader', root, 1),
        'test_dataloader.dataset.ann_file=annotations/val.json',
        'test_dataloader.dataset.data_prefix.img=val/',
        f'test_dataloader.dataset.metainfo.classes={classes}',
        'test_dataloader.dataset.pipeline.1.scale=(192,128)',
        f'test_evaluator.ann_file={ann_files["val"]}',
    )
    runner, loss, metrics = train_then_test(make_runner, train_tool,
                                            test_tool, DET_CONFIG, options,
                                            tmp_path, 'epoch_1.pth')
    backbone = runner.model.backbone
    assert type(backbone).__name__ == 'ViTAdapter'
    # ViT-Adapter's structure: no Last LN (nor MPVG's LN'').
    assert backbone.pe.method == 'mpvg' and backbone.last_norm is None
    assert backbone.vit_feature_source == 'last'
    assert runner.iter == 2 and math.isfinite(loss)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        assert 0.0 <= metrics[key] <= 1.0, key


def test_upernet_vit_adapter_trains_and_evaluates_on_ade20k_format(
        tmp_path, make_runner, train_tool, test_tool):
    root = tmp_path / 'ade'
    make_ade20k_shapes(str(root), splits=(('training', 4), ('validation',
                                                            2)))
    options = (
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
        'train_cfg.max_iters=3',
        'default_hooks.checkpoint.interval=3',
        'default_hooks.logger.interval=1',
        *NO_VAL,
        *loader_options('test_dataloader', root, 1),
        # 96x128 images -> 64x96: two overlapping 64x64 sliding windows.
        'test_dataloader.dataset.pipeline.1.scale=(256,64)',
    )
    fp32_config = tmp_path / 'fp32.py'
    fp32_config.write_text(
        f'_base_ = {SEG_CONFIG!r}\n'
        'optim_wrapper = dict(\n'
        '    _delete_=True, type="OptimWrapper",\n'
        '    optimizer={{_base_.optim_wrapper.optimizer}},\n'
        '    constructor={{_base_.optim_wrapper.constructor}},\n'
        '    paramwise_cfg={{_base_.optim_wrapper.paramwise_cfg}})\n')
    runner, loss, metrics = train_then_test(make_runner, train_tool,
                                            test_tool, fp32_config, options,
                                            tmp_path, 'iter_3.pth')
    backbone = runner.model.backbone
    assert type(backbone).__name__ == 'ViTAdapter'
    assert backbone.pe.method == 'lape'
    assert backbone.vit_feature_source == 'per_interaction'
    assert type(runner.optim_wrapper).__name__ == 'OptimWrapper'
    assert runner.iter == 3 and math.isfinite(loss)
    assert 0.0 <= metrics['mIoU'] <= 100.0
    # Layer-wise lr decay reached the optimizer through the config.
    lrs = {g['param_name']: g['lr']
           for g in runner.optim_wrapper.optimizer.param_groups}
    assert lrs['backbone.layers.0.attn.qkv.weight'] < \
        lrs['backbone.layers.11.attn.qkv.weight'] < \
        lrs['decode_head.conv_seg.weight']
