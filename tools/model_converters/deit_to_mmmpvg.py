"""Convert a timm / official DeiT / official LaPE checkpoint for mmmpvg.

Example:
    python tools/model_converters/deit_to_mmmpvg.py \
        deit_tiny_patch16_224-a1311bcf.pth deit-tiny_mpvg_init.pth \
        --pe-method mpvg --global-pool avg

The output loads with ``load_from=`` (classification) or as a backbone
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
"""
import argparse

import torch

from mmmpvg.models.converters import convert_deit_state_dict


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='timm/DeiT/LaPE checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the mmmpvg checkpoint')
    parser.add_argument('--pe-method', default='default',
                        choices=['default', 'lape', 'pvg', 'mpvg'])
    parser.add_argument('--global-pool', default='cls', choices=['cls', 'avg'])
    parser.add_argument(
        '--head-key', default='head.layers.head',
        help='mmpretrain name of the classifier Linear: head.layers.head '
        '(VisionTransformerClsHead) or head.fc (LinearClsHead)')
    return parser.parse_args()


def main():
    args = parse_args()
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=True)
    for wrapper in ('model', 'state_dict', 'model_ema'):
        if wrapper in checkpoint and isinstance(checkpoint[wrapper], dict):
            checkpoint = checkpoint[wrapper]
            break
    state_dict, notes = convert_deit_state_dict(
        checkpoint, dict(method=args.pe_method), args.global_pool,
        head_key=args.head_key)
    for note in notes:
        print(f'note: {note}')
    torch.save(
        dict(state_dict=state_dict,
             meta=dict(converted_from=args.src, pe_method=args.pe_method,
                       global_pool=args.global_pool)), args.dst)
    print(f'wrote {len(state_dict)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
