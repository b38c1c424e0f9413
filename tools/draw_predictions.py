"""Draw a model's predictions beside the ground truth on its test images.

    python tools/draw_predictions.py CONFIG CHECKPOINT [--out FILE.png]
        [--work-dir DIR] [--num-images 4] [--ncols 2] [--score-thr 0.3]
        [--min-size 256] [--cfg-options ...]

Works for any mmdet or mmseg config: the config's ``test_dataloader`` gives
the images, the model predicts them as ``tools/test.py`` does, and the
config's visualizer (mmdet's ``DetLocalVisualizer``, mmseg's
``SegLocalVisualizer``) draws ground truth (left) and prediction (right) of
each image on the original image. The panels are tiled into one PNG,
``work_dirs/<config name>/predictions.png`` unless ``--out`` or
``--work-dir`` say otherwise. Images smaller than ``--min-size`` are enlarged
(nearest neighbour, with their annotations and predictions) before drawing,
so that labels fit. CHECKPOINT may be ``none`` for the config's own
initialisation.
"""
import argparse
import os.path as osp
import tempfile
import uuid

import mmcv
import numpy as np
import torch
from mmengine.config import DictAction
from mmengine.registry import VISUALIZERS
from mmengine.runner import Runner

from mmmpvg.analysis.loading import NO_CHECKPOINT, load_model
from mmmpvg.utils.drawing import add_drawing_args, enlarge, upscale_factor


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='mmdet or mmseg config file')
    parser.add_argument(
        'checkpoint',
        help=f"checkpoint file, or '{NO_CHECKPOINT}' for the config's init")
    parser.add_argument(
        '--out',
        help='PNG file to write (default: WORK_DIR/predictions.png)')
    parser.add_argument(
        '--work-dir',
        help='default: ./work_dirs/<config name>, where tools/train.py '
        'writes')
    parser.add_argument('--num-images', type=int, default=4,
                        help='first test images to draw (default: 4)')
    parser.add_argument('--ncols', type=int, default=2,
                        help='ground truth | prediction pairs per row')
    add_drawing_args(parser)
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, default={},
        help='override config keys, e.g. test_dataloader.dataset.data_root=')
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.ncols < 1:
        parser.error('--num-images and --ncols must be >= 1')
    if args.out is None:
        work_dir = args.work_dir or osp.join(
            'work_dirs', osp.splitext(osp.basename(args.config))[0])
        args.out = osp.join(work_dir, 'predictions.png')
    return args


def draw_panels(model, cfg, num_images, score_thr=0.3, min_size=0):
    """One RGB panel (ground truth | prediction) per test image, images
    smaller than ``min_size`` enlarged."""
    if cfg.get('test_dataloader') is None:
        raise ValueError('The config has no test_dataloader to draw from.')
    dataloader = Runner.build_dataloader(
        dict(cfg.test_dataloader, batch_size=1, num_workers=0,
             persistent_workers=False))
    # A visualizer of its own (unique name, no file backends): a Runner's
    # global instance, if any, is left alone.
    visualizer = VISUALIZERS.build(
        dict(cfg.visualizer, name=f'draw_predictions_{uuid.uuid4().hex}',
             vis_backends=None, save_dir=None))
    visualizer.dataset_meta = dataloader.dataset.metainfo
    # Only mmdet's visualizer has a score threshold.
    extra = dict(pred_score_thr=score_thr) if cfg.default_scope == 'mmdet' \
        else {}
    panels = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        for data in dataloader:
            with torch.no_grad():
                (sample, ) = model.test_step(data)
            image = mmcv.imread(sample.img_path, channel_order='rgb')
            image, sample = enlarge(image, sample, upscale_factor(
                *image.shape[:2], min_size))
            # Read back what the visualizer writes: SegLocalVisualizer keeps
            # only the last half it drew as its current image.
            panel_file = osp.join(tmp_dir, f'{len(panels)}.png')
            visualizer.add_datasample(
                'prediction', image, data_sample=sample, draw_gt=True,
                draw_pred=True, show=False, out_file=panel_file, **extra)
            panels.append(mmcv.imread(panel_file, channel_order='rgb'))
            if len(panels) == num_images:
                break
    return panels


def tile(panels, ncols):
    """Panels in rows of ``ncols`` (padded with black to the largest)."""
    height = max(p.shape[0] for p in panels)
    width = max(p.shape[1] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, width - p.shape[1]),
                         (0, 0))) for p in panels]
    padded += [np.zeros_like(padded[0])] * (-len(padded) % ncols)
    rows = [np.concatenate(padded[i:i + ncols], axis=1)
            for i in range(0, len(padded), ncols)]
    return np.concatenate(rows, axis=0)


def main(argv=None):
    args = parse_args(argv)
    model, cfg = load_model(args.config, args.checkpoint, args.cfg_options,
                            args.device, whole_model=True)
    if cfg.get('default_scope') not in ('mmdet', 'mmseg'):
        raise ValueError(f'{args.config} is neither an mmdet nor an mmseg '
                         f'config (default_scope '
                         f'{cfg.get("default_scope")!r}).')
    panels = draw_panels(model, cfg, args.num_images, args.score_thr,
                         args.min_size)
    figure = tile(panels, args.ncols)
    mmcv.imwrite(mmcv.rgb2bgr(figure), args.out)
    print(f'wrote {len(panels)} images to {args.out}')
    return figure


if __name__ == '__main__':
    main()
