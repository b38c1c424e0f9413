"""Convert an official CeiT checkpoint (coeusguo/ceit) for PECeiT.

Example:
    python tools/model_converters/ceit_to_mmmpvg.py \
        ceit_tiny_patch16_224.pth ceit-tiny_default_init.pth

The output loads with ``load_from=`` into an ImageClassifier with a PECeiT
backbone and a LinearClsHead (``head.fc``). ``--pe-method pvg|mpvg`` drops
the class token (those methods use global average pooling).
"""
import argparse

from mmmpvg.models.converters import (convert_ceit_state_dict,
                                      save_converted, unwrapped_weights)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official CeiT checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the mmmpvg checkpoint')
    parser.add_argument('--pe-method', default='default',
                        choices=['default', 'lape', 'pvg', 'mpvg'])
    parser.add_argument(
        '--head-key', default='head.fc',
        help='mmpretrain name of the classifier Linear (LinearClsHead: '
        'head.fc)')
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        checkpoint = unwrapped_weights(args.src)
    except ValueError as error:
        raise SystemExit(f'error: {error}') from None
    global_pool = 'avg' if args.pe_method in ('pvg', 'mpvg') else 'cls'
    state_dict, notes = convert_ceit_state_dict(
        checkpoint, dict(method=args.pe_method), global_pool=global_pool,
        head_key=args.head_key)
    save_converted(args.dst, state_dict, notes, converted_from=args.src,
                   pe_method=args.pe_method)


if __name__ == '__main__':
    main()
