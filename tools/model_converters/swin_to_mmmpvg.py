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
from mmmpvg.models.converters import (converter_arg_parser,
                                      convert_swin_state_dict,
                                      exit_on_bad_checkpoint, save_converted,
                                      unwrapped_weights)


def main():
    args = converter_arg_parser(
        __doc__, 'timm / official Swin checkpoint (.pth)').parse_args()
    with exit_on_bad_checkpoint():
        state_dict, notes = convert_swin_state_dict(
            unwrapped_weights(args.src), dict(method=args.pe_method),
            head_key=args.head_key)
    save_converted(args.dst, state_dict, notes, converted_from=args.src,
                   pe_method=args.pe_method)


if __name__ == '__main__':
    main()
