"""Run a trained model on an image in one call and draw the result with the
library's own inferencer and visualizer (mmpretrain, mmdet or mmseg, chosen
by the config's default_scope).

    python demo/image_demo.py CONFIG CHECKPOINT IMAGE [--out-dir DIR]
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config

import mmmpvg  # noqa: F401  (safe checkpoint loading)
from mmmpvg.deploy import model_task


def build_inferencer(config: str, checkpoint: str, device: str = 'cpu'):
    """The library's inferencer for ``config`` (a path) and a checkpoint."""
    task = model_task(Config.fromfile(config))
    if task == 'mmpretrain':
        from mmpretrain.apis import ImageClassificationInferencer
        return ImageClassificationInferencer(
            model=config, pretrained=checkpoint, device=device)
    if task == 'mmdet':
        from mmdet.apis import DetInferencer
        return DetInferencer(model=config, weights=checkpoint, device=device,
                             show_progress=False)
    from mmseg.apis import MMSegInferencer
    return MMSegInferencer(model=config, weights=checkpoint, device=device)


def draw(inferencer, image: str, out_dir: str, **kwargs) -> dict:
    """Predict ``image`` and save the drawing under ``out_dir``; returns the
    predictions (plain Python)."""
    name = osp.basename(image)
    if type(inferencer).__name__ == 'ImageClassificationInferencer':
        os.makedirs(out_dir, exist_ok=True)
        # Digits are 32 px: draw them larger.
        kwargs.setdefault('rescale_factor', 8)
        result = inferencer(image, show_dir=out_dir, **kwargs)[0]
        path = osp.join(out_dir, osp.splitext(name)[0] + '.png')
    elif type(inferencer).__name__ == 'DetInferencer':
        result = inferencer(image, out_dir=out_dir, no_save_pred=True,
                            **kwargs)['predictions'][0]
        path = osp.join(out_dir, 'vis', name)
    else:
        result = inferencer(image, out_dir=out_dir, **kwargs)['predictions']
        path = osp.join(out_dir, 'vis', name)
    return dict(predictions=result, drawing=path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument('--out-dir', default='outputs')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    inferencer = build_inferencer(args.config, args.checkpoint, args.device)
    out = draw(inferencer, args.image, args.out_dir)
    print(f"Drew the prediction on {args.image} to {out['drawing']}")


if __name__ == '__main__':
    main()
