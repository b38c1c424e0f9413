"""Generate a small detection or segmentation set in the real formats.

Coloured squares, triangles and discs on noise, for trying the ViT-Adapter
configs without COCO or ADE20K:

    python tools/make_shapes_data.py coco data/shapes_coco --train 64 --val 16
    python tools/make_shapes_data.py ade20k data/shapes_ade20k \\
        --train 64 --val 16
"""
import argparse

from mmmpvg.datasets.shapes import (DEFAULT_SHAPE_SIZE, make_ade20k_shapes,
                                    make_coco_shapes)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('format', choices=['coco', 'ade20k'])
    parser.add_argument('out_dir')
    parser.add_argument('--train', type=int, default=64)
    parser.add_argument('--val', type=int, default=16)
    parser.add_argument('--size', type=int, nargs=2, default=(128, 128),
                        metavar=('H', 'W'))
    parser.add_argument('--max-shapes', type=int, default=3,
                        help='shapes per image at most (default: 3)')
    parser.add_argument(
        '--shape-size', type=float, nargs=2, default=DEFAULT_SHAPE_SIZE,
        metavar=('MIN', 'MAX'),
        help='shape side as fractions of the shorter image side '
        '(default: 1/6 1/3)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    shapes = dict(max_shapes=args.max_shapes,
                  shape_size=tuple(args.shape_size), seed=args.seed)
    if args.format == 'coco':
        make_coco_shapes(args.out_dir,
                         (('train', args.train), ('val', args.val)),
                         tuple(args.size), **shapes)
    else:
        make_ade20k_shapes(args.out_dir, (('training', args.train),
                                          ('validation', args.val)),
                           tuple(args.size), **shapes)
    print(f'wrote {args.format} shapes to {args.out_dir}')


if __name__ == '__main__':
    main()
