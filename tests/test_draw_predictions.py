"""tools/draw_predictions.py on the shapes demo configs: the libraries'
visualizers draw ground truth | prediction of each test image, enlarged to
a 256-pixel shorter side when smaller, tiled into one PNG in the config's
work dir unless told otherwise."""
import importlib.util
import os.path as osp

import mmcv
import numpy as np
import pytest

from mmmpvg.datasets.shapes import make_ade20k_shapes, make_coco_shapes

pytestmark = pytest.mark.usefixtures('one_thread')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHAPES = osp.join(REPO, 'configs', 'vit_adapter', 'shapes')


@pytest.fixture(scope='module')
def draw_tool():
    path = osp.join(REPO, 'tools', 'draw_predictions.py')
    spec = importlib.util.spec_from_file_location('draw_predictions', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_figure(figure, out, first_image, factor):
    """``first_image`` drawn ``factor`` times larger in the first panel of a
    2 x 2 grid."""
    first_image = first_image.repeat(factor, 0).repeat(factor, 1)
    height, width = first_image.shape[:2]
    # 3 images in rows of 2: the fourth cell is black padding.
    assert figure.shape == (2 * height, 2 * 2 * width, 3)
    assert not figure[height:, 2 * width:].any()
    assert (mmcv.imread(out, channel_order='rgb') == figure).all()
    # The ground truth is drawn over the image (left half of a panel), the
    # prediction beside it on the same image.
    gt_half = figure[:height, :width].astype(int)
    assert np.abs(gt_half - first_image).mean() > 1


@pytest.mark.slow
def test_draw_mask_rcnn_predictions(tmp_path, draw_tool, monkeypatch):
    root = str(tmp_path / 'coco')
    make_coco_shapes(root, splits=(('val', 3), ), size=(64, 64))
    monkeypatch.chdir(tmp_path)
    figure = draw_tool.main([
        osp.join(SHAPES, 'mask-rcnn_vit-adapter-ti-mpvg_fpn_shapes.py'),
        'none', '--num-images', '4', '--score-thr', '0.0',
        '--cfg-options', f'test_dataloader.dataset.data_root={root}/'])
    out = tmp_path / ('work_dirs/mask-rcnn_vit-adapter-ti-mpvg_fpn_shapes/'
                      'predictions.png')
    first = mmcv.imread(osp.join(root, 'val', '000001.jpg'),
                        channel_order='rgb')
    check_figure(figure, str(out), first, 4)


@pytest.mark.slow
def test_draw_upernet_predictions(tmp_path, draw_tool):
    root = str(tmp_path / 'ade')
    make_ade20k_shapes(root, splits=(('validation', 3), ))
    out = str(tmp_path / 'seg.png')
    figure = draw_tool.main([
        osp.join(SHAPES, 'upernet_vit-adapter-ti-mpvg_shapes-64x64.py'),
        'none', '--out', out, '--work-dir', str(tmp_path / 'unused'),
        '--cfg-options', f'test_dataloader.dataset.data_root={root}'])
    first = mmcv.imread(
        osp.join(root, 'images', 'validation', 'ADE_validation_00000000.jpg'),
        channel_order='rgb')
    check_figure(figure, out, first, 3)  # 96 px -> 288 px
    assert not (tmp_path / 'unused').exists()


@pytest.mark.slow
def test_draw_loads_every_weight_of_any_detector(tmp_path, draw_tool):
    """The ResNet-18 control has no PE backbone: drawing needs the whole
    model's weights, and a checkpoint that lacks one is refused by name."""
    import torch

    from mmmpvg.analysis.loading import load_model
    config = osp.join(SHAPES, 'mask-rcnn_r18_fpn_shapes.py')
    root = str(tmp_path / 'coco')
    make_coco_shapes(root, splits=(('val', 3), ), size=(64, 64))
    model, _ = load_model(config, 'none')
    state = model.state_dict()
    full, partial = str(tmp_path / 'full.pth'), str(tmp_path / 'part.pth')
    torch.save(dict(state_dict=state), full)
    del state['roi_head.bbox_head.fc_cls.weight']
    torch.save(dict(state_dict=state), partial)
    options = ['--cfg-options', f'test_dataloader.dataset.data_root={root}/']
    out = str(tmp_path / 'det.png')
    figure = draw_tool.main([config, full, '--out', out, '--num-images', '4',
                             '--score-thr', '0.0', '--min-size', '0'] +
                            options)
    first = mmcv.imread(osp.join(root, 'val', '000001.jpg'),
                        channel_order='rgb')
    check_figure(figure, out, first, 1)
    with pytest.raises(ValueError, match='fc_cls.weight'):
        draw_tool.main([config, partial, '--out', out] + options)
