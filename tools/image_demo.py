"""Run a trained model on an image in one call and draw the result with the
library's own inferencer and visualizer (mmpretrain, mmdet or mmseg, chosen
by the config's default_scope).

    python tools/image_demo.py CONFIG CHECKPOINT IMAGE [--out-dir DIR]
        [--min-size 256] [--score-thr 0.3] [--int8 [SCHEME]]

The drawing goes to ``work_dirs/<config name>/image_demo/`` unless
``--out-dir`` says otherwise. An image whose shorter side is below
``--min-size`` is drawn enlarged (nearest neighbour) so that labels fit.
"""
import argparse
import os
import os.path as osp
from typing import Optional

import mmcv
from mmengine.config import Config

import mmmpvg  # noqa: F401  (safe checkpoint loading)
from mmmpvg.deploy import model_task
from mmmpvg.deploy.quantization import (Int8Classifier, add_int8_argument,
                                        check_int8)
from mmmpvg.engine.cli import run_tool
from mmmpvg.utils.drawing import (DEFAULT_MIN_SIZE, add_drawing_args, enlarge,
                                  upscale_factor)


def build_inferencer(config: str, checkpoint: str, device: str = 'cpu',
                     int8: Optional[str] = None):
    """The library's inferencer for ``config`` (a path) and a checkpoint;
    ``int8`` (a scheme of mmmpvg.deploy.quantization) runs a classifier's
    linear layers in int8 on the CPU."""
    task = model_task(Config.fromfile(config))
    if int8:
        check_int8(task)
    if task == 'mmpretrain':
        from mmpretrain.apis import ImageClassificationInferencer
        inferencer = ImageClassificationInferencer(
            model=config, pretrained=checkpoint, device=device)
        if int8:
            inferencer.model = Int8Classifier(inferencer.model, int8)
        return inferencer
    if task == 'mmdet':
        from mmdet.apis import DetInferencer
        return DetInferencer(model=config, weights=checkpoint, device=device,
                             show_progress=False)
    from mmseg.apis import MMSegInferencer
    return MMSegInferencer(model=config, weights=checkpoint, device=device)


def draw(inferencer, image: str, out_dir: str,
         min_size: int = DEFAULT_MIN_SIZE, score_thr: float = 0.3) -> dict:
    """Predict ``image`` and save the drawing under ``out_dir``, enlarged
    if its shorter side is below ``min_size``; returns the predictions
    (plain Python) and the drawing's path."""
    os.makedirs(out_dir, exist_ok=True)
    name = osp.basename(image)
    pixels = mmcv.imread(image, channel_order='rgb')
    factor = upscale_factor(*pixels.shape[:2], min_size)
    if type(inferencer).__name__ == 'ImageClassificationInferencer':
        result = inferencer(image, show_dir=out_dir,
                            rescale_factor=factor)[0]
        return dict(predictions=result,
                    drawing=osp.join(out_dir,
                                     osp.splitext(name)[0] + '.png'))
    path = osp.join(out_dir, name)
    if type(inferencer).__name__ == 'DetInferencer':
        sample = inferencer(image, return_datasamples=True)[
            'predictions'][0]
        result = inferencer.pred2dict(sample)
        extra = dict(pred_score_thr=score_thr)
    else:
        sample = inferencer(image, return_datasamples=True)
        result = sample.pred_sem_seg.data[0].cpu().numpy()
        extra = {}
    pixels, sample = enlarge(pixels, sample, factor)
    inferencer.visualizer.add_datasample(
        name, pixels, sample, draw_gt=False, draw_pred=True, show=False,
        out_file=path, **extra)
    return dict(predictions=result, drawing=path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument(
        '--out-dir',
        help='default: work_dirs/<config name>/image_demo')
    add_drawing_args(parser)
    add_int8_argument(parser)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    out_dir = args.out_dir or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0],
        'image_demo')
    inferencer = build_inferencer(args.config, args.checkpoint, args.device,
                                  args.int8)
    out = draw(inferencer, args.image, out_dir, args.min_size,
               args.score_thr)
    print(f"Drew the prediction on {args.image} to {out['drawing']}")
    return out


if __name__ == '__main__':
    run_tool(main)
