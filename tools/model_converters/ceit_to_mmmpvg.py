"""Convert an official CeiT checkpoint (coeusguo/ceit) for PECeiT.

Example:
    python tools/model_converters/ceit_to_mmmpvg.py \
        ceit_tiny_patch16_224.pth ceit-tiny_default_init.pth

The output loads with ``load_from=`` into an ImageClassifier with a PECeiT
backbone and a LinearClsHead (``head.fc``). ``--pe-method pvg|mpvg`` drops
the class token (those methods use global average pooling).
"""
import argparse

import torch

from mmmpvg.models.converters import convert_ceit_state_dict


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
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=True)
    for wrapper in ('model', 'state_dict', 'model_ema'):
        if wrapper in checkpoint and isinstance(checkpoint[wrapper], dict):
            checkpoint = checkpoint[wrapper]
            break
    global_pool = 'avg' if args.pe_method in ('pvg', 'mpvg') else 'cls'
    state_dict, notes = convert_ceit_state_dict(
        checkpoint, dict(method=args.pe_method), global_pool=global_pool,
        head_key=args.head_key)
    for note in notes:
        print(f'note: {note}')
    torch.save(
        dict(state_dict=state_dict,
             meta=dict(converted_from=args.src, pe_method=args.pe_method)),
        args.dst)
    print(f'wrote {len(state_dict)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
