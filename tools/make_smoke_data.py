"""Write a small generated stand-in for data/: every data set that the
configs in configs/ read, each in its real on-disk layout (ImageNet folders
and meta files, CIFAR-100 pickles, COCO json with masks, ADE20K folders, the
shapes demo sets). Then run any config on it with --smoke:

    python tools/make_smoke_data.py                  # -> data/smoke
    python tools/train.py CONFIG --smoke
    python tools/test.py CONFIG CHECKPOINT --smoke
"""
import argparse

from mmmpvg.datasets.smoke import write_smoke_data
from mmmpvg.engine.cli import run_tool
from mmmpvg.engine.smoke import DEFAULT_SMOKE_DATA


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('out_dir', nargs='?', default=DEFAULT_SMOKE_DATA,
                        help=f'default: {DEFAULT_SMOKE_DATA}')
    parser.add_argument('--train', type=int, default=4,
                        help='images in each training split (default: 4)')
    parser.add_argument('--val', type=int, default=2,
                        help='images in each validation/test split '
                        '(default: 2)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    written = write_smoke_data(args.out_dir, args.train, args.val, args.seed)
    for layout, path in written.items():
        print(f'{layout:<26} {path}')
    return written


if __name__ == '__main__':
    run_tool(main)
