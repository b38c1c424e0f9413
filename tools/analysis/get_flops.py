"""Parameters and FLOPs per module type of a classification, detection or
segmentation config, with the multi-scale deformable attention counted.

    python tools/analysis/get_flops.py CONFIG [--shape H W]

FLOPs are multiply-adds (fvcore's convention) of one image, the PE chain
folded as deployed; what is counted is what tools/deployment/export_onnx.py
exports (for Mask R-CNN: backbone + FPN + RPN head, not the RoI heads, whose
cost depends on the number of proposals). Parameters are the whole model's.
"""
import argparse

import torch
from mmengine.config import Config, DictAction

from mmmpvg.deploy import export_module, load_model, model_task
from mmmpvg.deploy.flops import complexity, format_table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: 224x224 for '
                        'classifiers, 512x512 otherwise)')
    parser.add_argument('--no-cross-check', action='store_true',
                        help='skip the fvcore count')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    task = model_task(cfg)
    if args.shape:
        shape = tuple(args.shape)
    elif task == 'mmpretrain':
        size = cfg.model.backbone.get('img_size', 224)
        shape = (size, size) if isinstance(size, int) else tuple(size)
    else:
        shape = (512, 512)
    model, task = load_model(cfg, None, args.cfg_options)
    result = complexity(export_module(model, task), torch.randn(1, 3, *shape),
                        cross_check=not args.no_cross_check)
    print(f'{args.config} at {shape[0]}x{shape[1]}:')
    print(format_table(result))


if __name__ == '__main__':
    main()
