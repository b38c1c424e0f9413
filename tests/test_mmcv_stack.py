"""The OpenMMLab stack is real: mmcv's compiled ops run on CPU and agree with
independent references, and mmpretrain/mmdet/mmseg build and run models."""
import pytest
import torch
import torch.nn.functional as F
import torchvision.ops

from mmcv.ops import DeformConv2d, nms, roi_align
from mmengine.registry import DefaultScope


def random_boxes(generator, num, size):
    xy = torch.rand(num, 2, generator=generator) * size * 0.7
    wh = torch.rand(num, 2, generator=generator) * size * 0.3 + 1.0
    return torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)


@pytest.mark.parametrize('sampling_ratio', [0, 2])
def test_roi_align_forward_backward_match_torchvision(sampling_ratio):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 3, 16, 20, generator=g)
    boxes = random_boxes(g, 6, 32.0)
    rois = torch.cat([torch.tensor([0, 0, 0, 1, 1, 1.])[:, None], boxes], 1)
    upstream = torch.randn(6, 3, 4, 5, generator=g)

    def run(op, *pool_mode):
        # Positional, as mmcv's RoIAlign calls it: torch 2.1's
        # Function.apply takes no keywords.
        x = feats.clone().requires_grad_()
        out = op(x, rois, (4, 5), 0.5, sampling_ratio, *pool_mode, True)
        (out * upstream).sum().backward()
        return out, x.grad

    out, grad = run(roi_align, 'avg')
    ref_out, ref_grad = run(torchvision.ops.roi_align)
    assert out.abs().sum() > 0 and grad.abs().sum() > 0
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


def test_nms_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    boxes = random_boxes(g, 200, 64.0)
    scores = torch.rand(200, generator=g)

    dets, keep = nms(boxes, scores, iou_threshold=0.5)

    ref_keep = torchvision.ops.nms(boxes, scores, 0.5)
    assert 0 < len(ref_keep) < 200  # some boxes suppressed, some kept
    assert torch.equal(keep, ref_keep)
    torch.testing.assert_close(dets[:, 4], scores[ref_keep])


def test_deform_conv_with_integer_offsets_is_a_shifted_conv():
    """Zero offsets give a plain convolution; a constant offset of ``s``
    pixels to the right gives the convolution evaluated ``s`` pixels to the
    right (zeros outside the image), in values and in weight gradients."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 9, 11, generator=g)
    conv = DeformConv2d(4, 6, kernel_size=3, padding=1, bias=False)
    weight = conv.weight.detach().clone().requires_grad_()
    offset = torch.zeros(2, 2 * 9, 9, 11)  # (dy, dx) per kernel point

    for shift in (0, 1):
        offset[:, 1::2] = float(shift)
        conv.weight.grad = weight.grad = None
        out = conv(x, offset)
        ref = F.conv2d(F.pad(x, (1, 1 + shift, 1, 1)), weight)[..., shift:]
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        out.square().sum().backward()
        ref.square().sum().backward()
        torch.testing.assert_close(conv.weight.grad, weight.grad,
                                   rtol=1e-4, atol=1e-4)


def test_mmpretrain_builds_and_runs_a_classifier():
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=dict(
                    type='VisionTransformer',
                    arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                              feedforward_channels=64),
                    img_size=32, patch_size=8),
                head=dict(type='LinearClsHead', num_classes=10,
                          in_channels=32),
                data_preprocessor=dict(type='ClsDataPreprocessor',
                                       mean=[0.] * 3, std=[1.] * 3)))
    model.eval()
    batch = model.data_preprocessor(
        dict(inputs=[torch.rand(3, 32, 32) for _ in range(2)],
             data_samples=[DataSample() for _ in range(2)]))
    with torch.no_grad():
        preds = model(**batch, mode='predict')
    assert len(preds) == 2
    torch.testing.assert_close(preds[0].pred_score.sum(), torch.tensor(1.))


def test_mmdet_builds_and_runs_a_two_stage_detector():
    """Faster R-CNN (shrunk) through mmdet: its RPN runs mmcv's nms, its RoI
    head mmcv's RoIAlign."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    cfg = Config.fromstring(
        "_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'", '.py')
    cfg.model.backbone.update(depth=18, base_channels=8, init_cfg=None)
    cfg.model.neck.update(in_channels=[8, 16, 32, 64], out_channels=16)
    cfg.model.rpn_head.update(in_channels=16, feat_channels=16)
    cfg.model.roi_head.bbox_roi_extractor.out_channels = 16
    cfg.model.roi_head.bbox_head.update(in_channels=16, fc_out_channels=32,
                                        num_classes=3)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model).eval()
    meta = dict(img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1., 1.))
    batch = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)],
             data_samples=[DetDataSample(metainfo=meta)]))
    with torch.no_grad():
        preds = model(**batch, mode='predict')
    boxes = preds[0].pred_instances.bboxes
    assert boxes.shape[1] == 4
    assert len(boxes) <= cfg.model.test_cfg.rcnn.max_per_img


def test_mmseg_builds_and_runs_a_segmentor():
    from mmseg.registry import MODELS
    norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN has no CPU path
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(
            dict(
                type='EncoderDecoder',
                data_preprocessor=dict(type='SegDataPreProcessor',
                                       mean=[0.] * 3, std=[1.] * 3),
                # dilated (output stride 8), as mmseg's FCN-D8 models
                backbone=dict(type='ResNetV1c', depth=18, stem_channels=8,
                              base_channels=8, strides=(1, 2, 1, 1),
                              dilations=(1, 1, 2, 4), norm_cfg=norm_cfg),
                decode_head=dict(type='FCNHead', in_channels=64, in_index=3,
                                 channels=16, num_convs=1, num_classes=5,
                                 norm_cfg=norm_cfg))).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 64), mode='tensor')
    assert logits.shape == (2, 5, 8, 8)
