"""Token-norm maps over the image, before and after the Last LN (Fig. 7).

For each image (one row of the figure, no averaging), the L2 norm over the
dims of every patch token, laid out on the patch grid h x w (14 x 14 for a
224 input with 16-pixel patches; Swin: the last stage's grid, 7 x 7) and
stretched over the input image:
  before Last LN   ||x_out||: the input of backbone.last_norm (output of the
                   last layer);
  after Last LN    ||LN(x_out)||: the output of last_norm;
  MPVG output      ||LN(x_out) + LN''(pos_k)||: the tokens MPVG pools
                   (Eq. 11); a fourth panel, only for models with PE in the
                   Last LN.
The class token, if any, has no place on the grid; its norms are in the
JSON. Colours are scaled per panel (see each colour bar).

Writes to --out-dir (default: work_dirs/<config name>/token_norm_map):
token_norm_maps.png, one row per image for at most the first 16 images (a
row is 2.7 inches, 297 pixels), and token_norm_maps.json with the grids of
every image.
"""
import argparse
import os.path as osp

from mmmpvg.analysis import find_pe_backbone, token_norms
from mmmpvg.analysis.loading import (add_data_args, add_model_args,
                                     capture_records, iter_batches,
                                     load_model, resolve_out_dir, rgb)
from mmmpvg.analysis.plotting import (new_figure, overlay, save_figure,
                                      write_json)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_data_args(parser, num_images=4)
    args = parser.parse_args(argv)
    return resolve_out_dir(args, 'token_norm_map', args.config)


def collect(model, backbone, batches):
    """One dict of grids (h, w) per image, plus the image itself."""
    images = []
    for record, raw in capture_records(model, backbone, batches):
        if record.last_norm_input is None:
            raise ValueError(
                f'This {backbone.pe_method} backbone has no Last LN over '
                'the token map (a ViT-Adapter without vit_last_norm; CeiT, '
                'whose Last LN sees only the LCA token): there is no '
                'before/after to map.')
        stages = dict(before_last_norm=record.last_norm_input,
                      after_last_norm=record.last_norm_output)
        if record.plan.to_last_norm is not None:
            stages['output'] = record.output_tokens
        grids = {name: token_norms(record, tokens)
                 for name, tokens in stages.items()}
        extra = record.num_extra_tokens
        for index, image in enumerate(raw):
            images.append(dict(
                image=rgb(image),
                grids={name: grid[index] for name, grid in grids.items()},
                class_token_norms={
                    name: tokens[index, 0].double().norm().item()
                    for name, tokens in stages.items()} if extra else None))
    return images


TITLES = dict(before_last_norm='||x_out|| before Last LN',
              after_last_norm='||LN(x_out)|| after Last LN',
              output="||LN(x_out) + LN''(pos)|| (MPVG output)")


# Rows drawn at most; every image's numbers go to the JSON.
MAX_FIGURE_ROWS = 16


def plot(images, path: str, title: str):
    """One row per image, the first :data:`MAX_FIGURE_ROWS` of them."""
    images = images[:MAX_FIGURE_ROWS]
    stages = list(images[0]['grids'])
    fig, axes = new_figure(len(images), len(stages) + 1,
                           panel_size=(2.9, 2.7))
    for row, item in enumerate(images):
        axes[row, 0].imshow(item['image'],
                            cmap='gray' if item['image'].ndim == 2 else None)
        axes[row, 0].set_title(f'image {row}', fontsize=8)
        axes[row, 0].set_axis_off()
        for col, stage in enumerate(stages, start=1):
            overlay(axes[row, col], item['image'], item['grids'][stage],
                    TITLES[stage])
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def main(argv=None):
    args = parse_args(argv)
    model, cfg = load_model(args.config, args.checkpoint, args.cfg_options,
                            args.device, args.seed)
    backbone = find_pe_backbone(model)
    batches = iter_batches(model, cfg, args.images, args.split,
                           args.num_images, args.batch_size, args.img_size)
    images = collect(model, backbone, batches)
    label = osp.splitext(osp.basename(args.config))[0]
    grid = tuple(images[0]['grids']['before_last_norm'].shape)
    png = plot(images, osp.join(args.out_dir, 'token_norm_maps.png'),
               f'{label}: method={backbone.pe_method}, token L2 norms on the '
               f'{grid[0]}x{grid[1]} patch grid')
    numbers = dict(
        config=args.config, checkpoint=args.checkpoint,
        method=backbone.pe_method, grid_size=grid,
        images=[dict(
            grids=item['grids'],
            mean_norm={k: v.mean().item() for k, v in item['grids'].items()},
            class_token_norms=item['class_token_norms'])
            for item in images])
    json_path = write_json(osp.join(args.out_dir, 'token_norm_maps.json'),
                           numbers)
    drawn = min(len(images), MAX_FIGURE_ROWS)
    print(f'wrote {png} (images 0-{drawn - 1} of {len(images)}, one row '
          f'each; at most {MAX_FIGURE_ROWS} are drawn), {json_path} (all '
          f'{len(images)})')
    return numbers


if __name__ == '__main__':
    main()
