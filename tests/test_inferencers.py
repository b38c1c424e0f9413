"""One-call inference the OpenMMLab way: the libraries' inferencers run our
configs and checkpoints, and tools/image_demo.py draws their results."""
import importlib.util
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmengine.runner import save_checkpoint

from mmmpvg.datasets.shapes import (SHAPE_CLASSES, make_ade20k_shapes,
                                    make_coco_shapes)
from mmmpvg.datasets.sklearn_digits import SklearnDigits
from mmmpvg.deploy import load_model

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DIGITS = osp.join(REPO, 'configs/demo/mpvg_vit-micro_digits.py')
SHAPES = osp.join(REPO, 'configs/vit_adapter/shapes')
DET = osp.join(SHAPES, 'mask-rcnn_vit-adapter-ti-mpvg_fpn_shapes.py')
SEG = osp.join(SHAPES, 'upernet_vit-adapter-ti-mpvg_shapes-64x64.py')

spec = importlib.util.spec_from_file_location(
    'image_demo', osp.join(REPO, 'tools/image_demo.py'))
image_demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(image_demo)


def random_checkpoint(config, path, dataset_meta):
    """A randomly initialised model of ``config`` saved as training does."""
    torch.manual_seed(0)
    model, _ = load_model(config)
    model.init_weights()
    save_checkpoint(dict(state_dict=model.state_dict(),
                         meta=dict(dataset_meta=dataset_meta)), path)
    return model


def test_classification_inferencer(tmp_path):
    ckpt = str(tmp_path / 'digits.pth')
    model = random_checkpoint(DIGITS, ckpt,
                              dict(classes=[str(i) for i in range(10)]))
    digit = SklearnDigits(split='test', num_samples=1).get_data_info(0)['img']
    image = str(tmp_path / 'digit.png')
    mmcv.imwrite(digit, image)

    inferencer = image_demo.build_inferencer(DIGITS, ckpt)
    out = image_demo.draw(inferencer, image, str(tmp_path / 'out'))
    # Our own eval forward on the same pixels gives the same scores.
    inputs = model.data_preprocessor(
        dict(inputs=[torch.from_numpy(mmcv.imread(image)).permute(2, 0, 1)]),
        False)['inputs']
    with torch.no_grad():
        scores = model(inputs, mode='tensor').softmax(-1)[0].numpy()
    np.testing.assert_allclose(out['predictions']['pred_scores'], scores,
                               atol=1e-6)
    assert out['predictions']['pred_label'] == int(scores.argmax())
    # 32 px, drawn 8 times larger (the 256 px default of --min-size).
    assert mmcv.imread(out['drawing']).shape[:2] == (256, 256)


@pytest.mark.slow
def test_det_inferencer(tmp_path):
    ckpt = str(tmp_path / 'det.pth')
    random_checkpoint(DET, ckpt, dict(classes=SHAPE_CLASSES))
    make_coco_shapes(str(tmp_path), splits=(('val', 1), ))
    image = str(tmp_path / 'val' / '000001.jpg')
    height, width = mmcv.imread(image).shape[:2]

    out = image_demo.draw(image_demo.build_inferencer(DET, ckpt), image,
                          str(tmp_path / 'out'))
    pred = out['predictions']
    assert 0 < len(pred['labels']) <= 20  # test_cfg.rcnn.max_per_img
    assert set(pred['labels']) <= set(range(len(SHAPE_CLASSES)))
    boxes = np.array(pred['bboxes'])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() \
        and (boxes[:, 3] <= height).all()
    assert len(pred['masks']) == len(pred['labels'])
    assert mmcv.imread(out['drawing']).shape[:2] == (2 * height, 2 * width)


@pytest.mark.slow
def test_seg_inferencer(tmp_path):
    from mmseg.datasets import ADE20KDataset
    ckpt = str(tmp_path / 'seg.pth')
    random_checkpoint(SEG, ckpt, dict(ADE20KDataset.METAINFO))
    make_ade20k_shapes(str(tmp_path), splits=(('validation', 1), ))
    image = str(tmp_path / 'images/validation/ADE_validation_00000000.jpg')

    out = image_demo.draw(image_demo.build_inferencer(SEG, ckpt), image,
                          str(tmp_path / 'out'))
    seg = out['predictions']
    assert seg.shape == mmcv.imread(image).shape[:2]
    assert 0 <= seg.min() and seg.max() < len(ADE20KDataset.METAINFO[
        'classes'])
    # 96 x 128, drawn 3 times larger to reach a 256 px shorter side.
    assert mmcv.imread(out['drawing']).shape[:2] == (288, 384)
