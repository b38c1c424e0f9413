"""Export a classifier, or the ViT-Adapter detector/segmentor up to what
exports, to ONNX with the PE chain folded into constants.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT OUT.onnx \\
        [--shape H W] [--opset 17] [--no-fold]

The graph takes a normalised (data-preprocessed) NCHW float image; its batch
axis is dynamic, H and W are the ones exported (see mmmpvg.deploy).
"""
import argparse

from mmengine.config import Config, DictAction

from mmmpvg.deploy import EXPORT_PARTS, export_onnx, load_model, model_task
from mmmpvg.deploy.onnx_export import MIN_OPSET


def default_shape(cfg: Config, task: str):
    if task == 'mmpretrain':
        size = cfg.model.backbone.get('img_size', 224)
        return (size, size) if isinstance(size, int) else tuple(size)
    crop = cfg.model.get('test_cfg', {}).get('crop_size')
    if task == 'mmseg' and crop:
        return tuple(crop)
    raise ValueError(f'{task} config: give the input size with --shape H W '
                     '(multiples of 32).')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='output .onnx file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: the config\'s)')
    parser.add_argument('--opset', type=int, default=MIN_OPSET)
    parser.add_argument('--no-fold', action='store_true',
                        help='keep the PE chain (its LayerNorms) in the '
                        'graph, for inspection')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    task = model_task(cfg)
    shape = tuple(args.shape) if args.shape else default_shape(cfg, task)
    model, task = load_model(cfg, args.checkpoint, args.cfg_options)
    export_onnx(model, task, args.out, shape, opset=args.opset,
                fold=not args.no_fold)
    print(f'Exported {EXPORT_PARTS[task]} at {shape[0]}x{shape[1]} '
          f'(dynamic batch, opset {args.opset}, PE chain '
          f'{"in the graph" if args.no_fold else "folded"}) to {args.out}')


if __name__ == '__main__':
    main()
