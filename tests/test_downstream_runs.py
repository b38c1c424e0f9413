"""Real mmdet / mmseg runs of the ViT-Adapter configs on generated data.

Each config is used as shipped, changed only by ``--cfg-options`` for a CPU
smoke run: BN for SyncBN, no pre-trained checkpoint, small images, fewer
proposals, a few iterations, the generated data set; UperNet in fp32 (see
``downstream.upernet_fp32_config``). tools/train.py trains
through MMEngine's Runner; tools/test.py then evaluates the saved
checkpoint with mmdet's ``CocoMetric`` (bbox + segm mAP) and mmseg's
``IoUMetric`` (mIoU).
"""
import math

import pytest
from downstream import (DET_CONFIG, mask_rcnn_smoke_options,
                        upernet_fp32_config, upernet_smoke_options)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures('one_thread')
]


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
    options = (*mask_rcnn_smoke_options(tmp_path / 'coco'),
               'train_cfg.max_epochs=1')
    runner, loss, metrics = train_then_test(make_runner, train_tool,
                                            test_tool, DET_CONFIG, options,
                                            tmp_path, 'epoch_1.pth')
    backbone = runner.model.backbone
    assert type(backbone).__name__ == 'ViTAdapter'
    # ViT-Adapter's structure: no Last LN (nor MPVG's LN'').
    assert backbone.pe.method == 'mpvg' and backbone.ln1 is None
    assert backbone.vit_feature_source == 'last'
    assert runner.iter == 2 and math.isfinite(loss)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        assert 0.0 <= metrics[key] <= 1.0, key


def test_upernet_vit_adapter_trains_and_evaluates_on_ade20k_format(
        tmp_path, make_runner, train_tool, test_tool):
    options = (*upernet_smoke_options(tmp_path / 'ade'),
               'train_cfg.max_iters=3',
               'default_hooks.checkpoint.interval=3')
    runner, loss, metrics = train_then_test(make_runner, train_tool,
                                            test_tool,
                                            upernet_fp32_config(tmp_path),
                                            options,
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


def test_resnet18_control_changes_only_the_backbone_of_the_shapes_demo():
    """The detection guide compares the Mask R-CNN shapes demo with this
    control: everything but the backbone (and the FPN's input widths) must
    match."""
    import os.path as osp

    from mmengine.config import Config
    shapes = osp.join(osp.dirname(DET_CONFIG), 'shapes')
    demo = Config.fromfile(
        osp.join(shapes, 'mask-rcnn_vit-adapter-ti-mpvg_fpn_shapes.py'))
    control = Config.fromfile(osp.join(shapes, 'mask-rcnn_r18_fpn_shapes.py'))
    assert control.model.backbone.type == 'mmdet.ResNet'
    assert control.model.backbone.depth == 18
    assert control.model.neck.in_channels == [64, 128, 256, 512]
    for cfg in (demo, control):
        cfg.model.pop('backbone')
        cfg.model.neck.pop('in_channels')
    assert control.to_dict() == demo.to_dict()
