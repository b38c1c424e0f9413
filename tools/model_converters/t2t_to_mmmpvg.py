"""Convert an official T2T-ViT (Performer stem) checkpoint for PET2TViT.

Example:
    python tools/model_converters/t2t_to_mmmpvg.py \
        71.7_T2T_ViT_7.pth.tar t2t-vit-7_default_init.pth --pe-method default

The EMA weights (``state_dict_ema``) are taken when present, as the
official transfer learning does; ``--no-ema`` takes ``state_dict``. The
output uses mmpretrain's T2T_ViT names and loads with ``load_from=`` or as
a backbone ``init_cfg=dict(type='Pretrained', checkpoint=...,
prefix='backbone.')`` (what the CIFAR-100 transfer configs do).
"""
import argparse

from mmmpvg.models.converters import (convert_t2t_state_dict,
                                      load_checkpoint_safely, save_converted,
                                      t2t_checkpoint_weights)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official T2T-ViT checkpoint')
    parser.add_argument('dst', help='where to write the mmmpvg checkpoint')
    parser.add_argument('--pe-method', default='default',
                        choices=['default', 'lape', 'pvg', 'mpvg'])
    parser.add_argument(
        '--no-ema', action='store_true',
        help='convert state_dict even if state_dict_ema is present')
    parser.add_argument(
        '--head-key', default='head.layers.head',
        help='mmpretrain name of the classifier Linear '
        '(VisionTransformerClsHead: head.layers.head)')
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        checkpoint = load_checkpoint_safely(args.src)
    except ValueError as error:
        raise SystemExit(f'error: {error}') from None
    weights = t2t_checkpoint_weights(checkpoint, use_ema=not args.no_ema)
    with_cls_token = args.pe_method in ('default', 'lape')
    state_dict, notes = convert_t2t_state_dict(
        weights, dict(method=args.pe_method), with_cls_token,
        head_key=args.head_key)
    save_converted(args.dst, state_dict, notes, converted_from=args.src,
                   pe_method=args.pe_method, ema=not args.no_ema)


if __name__ == '__main__':
    main()
