"""Convert a timm / official microsoft Swin checkpoint for PESwinTransformer.

Example:
    python tools/model_converters/swin_to_mmmpvg.py \
        swin_tiny_patch4_window7_224.pth swin-tiny_mpvg_init.pth \
        --pe-method mpvg

The output uses mmpretrain's Swin names (it also loads into mmpretrain's
``SwinTransformer``) and loads with ``load_from=`` (classification) or as a
backbone ``init_cfg=dict(type='Pretrained', checkpoint=...,
prefix='backbone.')``.
"""
import argparse

from mmmpvg.models.converters import (convert_swin_state_dict,
                                      save_converted, unwrapped_weights)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='timm / official Swin checkpoint (.pth)')
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
    state_dict, notes = convert_swin_state_dict(
        checkpoint, dict(method=args.pe_method), head_key=args.head_key)
    save_converted(args.dst, state_dict, notes, converted_from=args.src,
                   pe_method=args.pe_method)


if __name__ == '__main__':
    main()
