"""Convert an official CeiT checkpoint (coeusguo/ceit) for PECeiT.

Example:
    python tools/model_converters/ceit_to_mmmpvg.py \
        ceit_tiny_patch16_224.pth ceit-tiny_default_init.pth

The output loads with ``load_from=`` into an ImageClassifier with a PECeiT
backbone and a LinearClsHead (``head.fc``). ``--pe-method pvg|mpvg`` drops
the class token (those methods use global average pooling).
"""
from mmmpvg.models.converters import (converter_arg_parser,
                                      convert_ceit_state_dict,
                                      exit_on_bad_checkpoint, save_converted,
                                      unwrapped_weights)


def main():
    args = converter_arg_parser(
        __doc__, 'official CeiT checkpoint (.pth)').parse_args()
    global_pool = 'avg' if args.pe_method in ('pvg', 'mpvg') else 'cls'
    with exit_on_bad_checkpoint():
        state_dict, notes = convert_ceit_state_dict(
            unwrapped_weights(args.src), dict(method=args.pe_method),
            global_pool=global_pool, head_key=args.head_key)
    save_converted(args.dst, state_dict, notes, converted_from=args.src,
                   pe_method=args.pe_method)


if __name__ == '__main__':
    main()
