"""Per-layer heatmaps of the token embedding and the PE (paper Fig. 2, 8).

Every map is tokens (rows; class token first if any) x dims (columns).
Columns of the figure: layer l = 0..L-1 (backbone.layers[l]), then "before"
and "after" the Last LN (backbone.last_norm; left out for a backbone that
does not run it, e.g. a ViT-Adapter without vit_last_norm). For Swin, layer
l is backbone.blocks[l] (all stages in order; each stage's maps have its own
tokens x dims) and the Last LN is the last stage's norm.

Top row, token embedding, averaged over the --num-images images:
  layer l          LN_l(x_l): the output of layers[l].ln1, the token term
                   that meets the PE in attn(LN_l(x_l) + pe_l) (--tokens ln1,
                   default); or x_l, the residual stream entering layers[l]
                   (--tokens residual).
  before Last LN   x_out: the output of the last layer (paper: x_{L+1}).
  after Last LN    LN(x_out): the output of last_norm, without MPVG's PE.
Bottom row, position embedding (image independent):
  layer l          pe_l: the PE handed to layers[l] after its LN (LaPE: all
                   layers; PVG/MPVG: layers 1..L-1). A layer that gets none
                   shows, at layer 0, pos_0, the PE added to the patch tokens
                   before layer 0 (Default, PVG, MPVG), else "no PE". Default
                   models therefore show only pos_0.
  after Last LN    LN''(pos_k): the PE added to the Last LN output (Eq. 11:
                   MPVG, or any pe_cfg with last_norm_pos); else "no PE".
r (panel titles): Pearson's correlation over all tokens x dims entries of
  the image-averaged LN_l(x_l) and pe_l, i.e. both after their LNs (after
  the Last LN: averaged LN(x_out) and LN''(pos_k)). It exists only where a
  PE enters (not at pos_0, which is summed into x_0 rather than added after
  an LN). r uses LN_l(x_l) whatever --tokens shows.

Writes to --out-dir: pe_heatmaps.png; pe_heatmaps.json (r per layer, the
mean over images of the per-image r, max |value| per map); pe_heatmaps.npz
(the maps as arrays).
"""
import argparse
import os.path as osp

import numpy as np

from mmmpvg.analysis.loading import (add_data_args, add_model_args,
                                     resolve_out_dir, summarize_model)
from mmmpvg.analysis.plotting import (blank, fmt, heatmap, new_figure,
                                      save_figure, write_json)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_data_args(parser, num_images=64)
    parser.add_argument(
        '--tokens', choices=('ln1', 'residual'), default='ln1',
        help='token map of each layer: LN_l(x_l) or x_l (default: '
        '%(default)s)')
    args = parser.parse_args(argv)
    return resolve_out_dir(args, 'pe_heatmaps', args.config)


def layer_columns(summary, tokens: str):
    """(title, token map, PE title, PE map, r, per-image r) per column."""
    columns = []
    pearson = summary.layer_pearson()
    token_maps = summary.token_ln1 if tokens == 'ln1' else summary.token_input
    token_name = 'LN_{0}(x_{0})' if tokens == 'ln1' else 'x_{0}'
    for layer, pe in enumerate(summary.layer_pe):
        if pe is not None:
            pe_title = f"pe_{layer} into layer {layer} (after LN'_{layer})"
        elif layer == 0 and summary.input_pe is not None:
            pe, pe_title = summary.input_pe, 'pos_0, added to x_0 (input)'
        else:
            pe_title = f'no PE enters layer {layer}'
        columns.append(dict(
            name=f'layer_{layer}', title=f'layer {layer}: '
            + token_name.format(layer), tokens=token_maps[layer],
            pe_title=pe_title, pe=pe, pearson=pearson[layer],
            pearson_per_image=summary.pearson_per_image[layer]))
    last_norm = summary.last_norm
    if last_norm is None:  # e.g. a ViT-Adapter that skips it
        return columns
    columns.append(dict(
        name='before_last_norm', title='before Last LN: x_out',
        tokens=last_norm.before, pe_title='no PE', pe=None,
        pearson=None, pearson_per_image=None))
    columns.append(dict(
        name='after_last_norm', title='after Last LN: LN(x_out)',
        tokens=last_norm.after,
        pe_title="LN''(pos_k) added after the Last LN"
        if last_norm.pe is not None else 'no PE in the Last LN',
        pe=last_norm.pe, pearson=last_norm.pearson(),
        pearson_per_image=last_norm.pearson_per_image))
    return columns


def plot(summary, columns, path: str, label: str):
    fig, axes = new_figure(2, len(columns), panel_size=(2.7, 2.6))
    for col, column in enumerate(columns):
        title = column['title']
        if column['pearson'] is not None:
            title += f"\nr = {fmt(column['pearson'])}"
        heatmap(axes[0, col], column['tokens'], title)
        if column['pe'] is None:
            blank(axes[1, col], column['pe_title'])
        else:
            heatmap(axes[1, col], column['pe'], column['pe_title'])
    fig.suptitle(
        f'{label}: method={summary.method}, pool={summary.global_pool}, '
        f'mean over {summary.num_images} images (top: token embedding, '
        'bottom: PE)', fontsize=10)
    return save_figure(fig, path)


def main(argv=None):
    args = parse_args(argv)
    summary = summarize_model(args, args.config, args.checkpoint)
    columns = layer_columns(summary, args.tokens)
    label = osp.splitext(osp.basename(args.config))[0]
    png = plot(summary, columns, osp.join(args.out_dir, 'pe_heatmaps.png'),
               label)
    maps = {f"{c['name']}/tokens": c['tokens'].numpy() for c in columns}
    maps.update({f"{c['name']}/pe": c['pe'].numpy() for c in columns
                 if c['pe'] is not None})
    npz = osp.join(args.out_dir, 'pe_heatmaps.npz')
    np.savez_compressed(npz, **maps)
    numbers = dict(
        config=args.config, checkpoint=args.checkpoint,
        method=summary.method, global_pool=summary.global_pool,
        num_images=summary.num_images, tokens=args.tokens,
        layers_with_pe=summary.layers_with_pe,
        note=None if summary.layers_with_pe else
        'No PE enters any layer (non-layer-wise model): the PE row shows '
        'pos_0, the PE added to the input, and r exists only after the '
        'Last LN, if at all.',
        columns=[{
            'name': c['name'], 'token_map': c['title'],
            'pe_map': c['pe_title'],
            'pearson': c['pearson'],
            'pearson_per_image_mean': c['pearson_per_image'],
            'token_abs_max': float(c['tokens'].abs().max()),
            'pe_abs_max': None if c['pe'] is None else float(
                c['pe'].abs().max()),
        } for c in columns])
    json_path = write_json(osp.join(args.out_dir, 'pe_heatmaps.json'),
                           numbers)
    for column in columns:
        if column['pearson'] is not None:
            print(f"{column['name']:>18}: r = {fmt(column['pearson'], 4)}")
    print(f'wrote {png}, {json_path}, {npz}')
    return numbers


if __name__ == '__main__':
    main()
