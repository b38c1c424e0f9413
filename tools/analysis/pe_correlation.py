"""Per-layer correlation of token embedding and PE, several models (Fig. 4).

For layer l (backbone.layers[l], counted from 0; for Swin backbone.blocks[l]
across all stages, each at its stage's grid and width) the correlation is

  r_l = Pearson( mean over images of LN_l(x_l),  pe_l )

over all tokens x dims entries (class token included if any), where
LN_l(x_l) is the output of layers[l].ln1 (the token embedding after its LN)
and pe_l the PE handed to layers[l] after its own LN, i.e. the two terms of
attn(LN_l(x_l) + pe_l). r_l exists only for layers that receive a PE (LaPE:
all; PVG/MPVG: 1..L-1; Default: none, since its only PE, pos_0, is summed
into x_0 before layer 0: such a model is listed with no points). For MPVG a
star at x = L marks the same r after the Last LN, between the averaged
LN(x_out) and LN''(pos_k). The JSON also gives the mean over images of the
per-image r.

Each --model uses the same images: --images DIR, or the data set of its own
config (--split).

Writes to --out-dir: pe_correlation.png and pe_correlation.json.
"""
import argparse
import os.path as osp

from mmmpvg.analysis.loading import (add_data_args, resolve_out_dir,
                                     summarize_model)
from mmmpvg.analysis.plotting import (fmt, new_figure, save_figure,
                                      write_json)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        '--model', nargs='+', action='append', required=True,
        metavar='CONFIG CHECKPOINT [LABEL]',
        help="a model to plot (repeat for several); CHECKPOINT 'none' is "
        "the config's own init; LABEL defaults to the config name")
    add_data_args(parser, num_images=64)
    args = parser.parse_args(argv)
    for model in args.model:
        if len(model) not in (2, 3):
            parser.error('--model takes CONFIG CHECKPOINT [LABEL], got '
                         f'{model}')
    return resolve_out_dir(args, 'pe_correlation')


def plot(results, path: str):
    fig, axes = new_figure(1, 1, panel_size=(6.5, 4.2))
    ax = axes[0, 0]
    max_layers = 1
    for result in results:
        points = [(layer, r) for layer, r in enumerate(result['pearson'])
                  if r is not None]
        max_layers = max(max_layers, len(result['pearson']))
        label = f"{result['label']} ({result['method']})"
        if not points:
            label += ': no per-layer PE'
        line, = ax.plot([p[0] for p in points], [p[1] for p in points],
                        marker='o', label=label)
        if result['last_norm_pearson'] is not None:
            ax.plot([len(result['pearson'])], [result['last_norm_pearson']],
                    marker='*', markersize=12, color=line.get_color(),
                    linestyle='none')
    ax.axhline(0.0, color='grey', linewidth=0.8)
    ax.set_xticks(range(max_layers + 1))
    ax.set_xticklabels([str(i) for i in range(max_layers)] + ['Last LN'])
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel('layer l')
    ax.set_ylabel('Pearson r(mean LN_l(x_l), pe_l)')
    ax.set_title('Token embedding vs PE, both after their LNs '
                 '(star: after the Last LN)', fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def main(argv=None):
    args = parse_args(argv)
    results = []
    for config, checkpoint, *label in args.model:
        summary = summarize_model(args, config, checkpoint)
        last_norm = summary.last_norm
        results.append(dict(
            label=label[0] if label else osp.splitext(
                osp.basename(config))[0],
            config=config, checkpoint=checkpoint, method=summary.method,
            global_pool=summary.global_pool, num_images=summary.num_images,
            layers_with_pe=summary.layers_with_pe,
            pearson=summary.layer_pearson(),
            pearson_per_image_mean=summary.pearson_per_image,
            last_norm_pearson=last_norm and last_norm.pearson(),
            last_norm_pearson_per_image_mean=(
                last_norm and last_norm.pearson_per_image)))
    png = plot(results, osp.join(args.out_dir, 'pe_correlation.png'))
    json_path = write_json(
        osp.join(args.out_dir, 'pe_correlation.json'),
        dict(definition='r_l = Pearson over tokens x dims of (mean over '
             "images of layers[l].ln1 output, PE handed to layers[l]); "
             "last_norm: (mean LN(x_out), LN''(pos_k)); null = no PE there",
             models=results))
    for result in results:
        values = [f'layer {layer}: {fmt(r)}'
                  for layer, r in enumerate(result['pearson'])
                  if r is not None]
        if result['last_norm_pearson'] is not None:
            values.append(f"Last LN: {fmt(result['last_norm_pearson'])}")
        values = ', '.join(values) or 'no PE to correlate'
        print(f"{result['label']}: {values}")
    print(f'wrote {png}, {json_path}')
    return results


if __name__ == '__main__':
    main()
