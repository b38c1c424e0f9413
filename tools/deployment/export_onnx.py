"""Export a classifier, or the ViT-Adapter detector/segmentor up to what
exports, to ONNX with the PE chain folded into constants.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT OUT.onnx \\
        [--shape H W] [--opset 17] [--no-fold] [--int8]

The graph takes a normalised (data-preprocessed) NCHW float image; its batch
axis is dynamic, H and W are the ones exported (see mmmpvg.deploy).
``--int8`` (classifiers) writes the model quantized by onnxruntime instead:
int8 weights per output channel, activations quantized per call, the
classification head in fp32 (mmmpvg.deploy.quantization.quantize_onnx).
"""
import argparse

from mmengine.config import Config, DictAction

from mmmpvg.deploy import EXPORT_PARTS, export_onnx, load_model, model_task
from mmmpvg.deploy.onnx_export import MIN_OPSET
from mmmpvg.deploy.quantization import check_int8_task, export_int8_onnx


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
    parser.add_argument('--int8', action='store_true',
                        help='classifiers: write the int8 model '
                        '(onnxruntime dynamic quantization)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    task = model_task(cfg)
    if args.int8:
        try:
            check_int8_task(task)
        except ValueError as error:
            parser.error(str(error))
        if args.no_fold:
            parser.error('--int8 exports the folded graph; drop --no-fold.')
    shape = tuple(args.shape) if args.shape else default_shape(cfg, task)
    model, task = load_model(cfg, args.checkpoint, args.cfg_options)
    if args.int8:
        export_int8_onnx(model, args.out, shape, opset=args.opset)
    else:
        export_onnx(model, task, args.out, shape, opset=args.opset,
                    fold=not args.no_fold)
    print(f'Exported {EXPORT_PARTS[task]} at {shape[0]}x{shape[1]} '
          f'(dynamic batch, opset {args.opset}, PE chain '
          f'{"in the graph" if args.no_fold else "folded"}'
          f'{", int8 linear layers" if args.int8 else ""}) to {args.out}')


if __name__ == '__main__':
    main()
