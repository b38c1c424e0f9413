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
from mmmpvg.models.converters import (converter_arg_parser,
                                      convert_t2t_state_dict,
                                      exit_on_bad_checkpoint,
                                      load_checkpoint_safely, save_converted,
                                      t2t_checkpoint_weights)


def main():
    parser = converter_arg_parser(
        __doc__, 'official T2T-ViT checkpoint', head_key='head.layers.head',
        head_key_help='mmpretrain name of the classifier Linear '
        '(VisionTransformerClsHead: head.layers.head)')
    parser.add_argument(
        '--no-ema', action='store_true',
        help='convert state_dict even if state_dict_ema is present')
    args = parser.parse_args()
    with_cls_token = args.pe_method in ('default', 'lape')
    with exit_on_bad_checkpoint():
        weights = t2t_checkpoint_weights(load_checkpoint_safely(args.src),
                                         use_ema=not args.no_ema)
        state_dict, notes = convert_t2t_state_dict(
            weights, dict(method=args.pe_method), with_cls_token,
            head_key=args.head_key)
    save_converted(args.dst, state_dict, notes, converted_from=args.src,
                   pe_method=args.pe_method, ema=not args.no_ema)


if __name__ == '__main__':
    main()
