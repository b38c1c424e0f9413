"""Convert a timm / official DeiT / official LaPE / mmpretrain checkpoint
for mmmpvg (released weights or training checkpoints; ``--ema`` takes the
EMA weights).

Example:
    python tools/model_converters/deit_to_mmmpvg.py \
        deit_tiny_patch16_224-a1311bcf.pth deit-tiny_mpvg_init.pth \
        --pe-method mpvg --global-pool avg

The output loads with ``load_from=`` (classification) or as a backbone
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
"""
from mmmpvg.models.converters import (converter_arg_parser,
                                      convert_deit_state_dict,
                                      exit_on_bad_checkpoint,
                                      read_vit_checkpoint, save_converted)


def main():
    parser = converter_arg_parser(
        __doc__, 'timm, official DeiT/LaPE or mmpretrain checkpoint',
        head_key='head.layers.head',
        head_key_help='mmpretrain name of the classifier Linear: '
        'head.layers.head (VisionTransformerClsHead) or head.fc '
        '(LinearClsHead)')
    parser.add_argument('--global-pool', default='cls', choices=['cls', 'avg'])
    parser.add_argument(
        '--ema', action='store_true',
        help="convert the EMA weights (DeiT's model_ema, mmpretrain's "
        'ema_state_dict)')
    args = parser.parse_args()
    with exit_on_bad_checkpoint():
        source, kind = read_vit_checkpoint(args.src, use_ema=args.ema)
        state_dict, notes = convert_deit_state_dict(
            source, dict(method=args.pe_method), args.global_pool,
            head_key=args.head_key)
    print(f'read {args.src}: {kind} layout'
          + (', EMA weights' if args.ema else ''))
    save_converted(args.dst, state_dict, notes, converted_from=args.src,
                   source_layout=kind, ema=args.ema, pe_method=args.pe_method,
                   global_pool=args.global_pool)


if __name__ == '__main__':
    main()
