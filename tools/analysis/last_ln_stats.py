"""The Last LN's gamma and beta and what it does to the pooled token (Fig. 6).

Tensors (backbone.last_norm, the LayerNorm after the last layer; for Swin
the last stage's norm, pooled by the GAP neck):
  gamma, beta   its affine weight and bias, one value per dim;
  var(beta)     population variance of beta over the dims (divide by C);
                the paper reports 0.2387 (PVG) vs 0.0193 (MPVG), DeiT-Ti.
  before        x_out, the input of last_norm (output of the last layer);
  after         y = LN(x_out) + LN''(pos_k) for MPVG (Eq. 11), LN(x_out)
                otherwise: the tokens the backbone pools. For MPVG the JSON
                also gives the cosine with LN(x_out) alone ("ln_only").
  pooled        the class token for global_pool='cls' models, the mean over
                all tokens for GAP ('avg') models.
Cosine similarity of pooled before vs pooled after, two ways:
  cosine_of_batch_means   cos(mean over images of pooled before, mean over
                          images of pooled after): the token average of the
                          batch-averaged heatmaps, as in Fig. 6's caption
                          (paper: 0.4597 cls vs 0.2995 GAP, PVG DeiT-Ti);
  cosine_per_image_mean   the mean over images of each image's cosine.
The heatmaps are x_out and LN(x_out) averaged over the images (tokens x
dims), and LN''(pos_k) for MPVG.

Writes to --out-dir: last_ln_stats.png and last_ln_stats.json.
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
    args = parser.parse_args(argv)
    return resolve_out_dir(args, 'last_ln_stats', args.config)


def last_norm_numbers(summary) -> dict:
    last_norm = summary.require_last_norm()
    has_pe = last_norm.pe is not None
    numbers = dict(
        method=summary.method, global_pool=summary.global_pool,
        pooled='class token' if summary.global_pool == 'cls'
        else 'mean over tokens',
        num_images=summary.num_images,
        pe_in_last_norm=has_pe,
        beta_variance=last_norm.beta_variance(),
        beta_mean=last_norm.beta.mean().item(),
        gamma_mean=last_norm.gamma.mean().item(),
        gamma_variance=last_norm.gamma.var(unbiased=False).item(),
        cosine_of_batch_means=last_norm.cosine_of_means(),
        cosine_per_image_mean=last_norm.cosine_per_image)
    if has_pe:
        numbers.update(
            cosine_of_batch_means_ln_only=last_norm.cosine_of_means(
                ln_only=True),
            cosine_per_image_mean_ln_only=last_norm.cosine_ln_only_per_image)
    return numbers


def plot(summary, numbers: dict, path: str, label: str):
    last_norm = summary.last_norm
    fig, axes = new_figure(2, 3, panel_size=(3.6, 2.9))
    heatmap(axes[0, 0], last_norm.before, 'before Last LN: x_out')
    heatmap(axes[0, 1], last_norm.after, 'after Last LN: LN(x_out)')
    if last_norm.pe is None:
        blank(axes[0, 2], 'no PE in the Last LN')
    else:
        heatmap(axes[0, 2], last_norm.pe,
                "LN''(pos_k) added after the Last LN")
    dims = np.arange(last_norm.gamma.numel())
    axes[1, 0].bar(dims, last_norm.gamma.numpy(), width=1.0)
    axes[1, 0].set_title(f"gamma (mean {fmt(numbers['gamma_mean'])})",
                         fontsize=9)
    axes[1, 1].bar(dims, last_norm.beta.numpy(), width=1.0, color='C1')
    axes[1, 1].set_title(
        f"beta, var = {fmt(numbers['beta_variance'], 4)}", fontsize=9)
    pooled = last_norm.pooled(last_norm.before).numpy()
    axes[1, 2].bar(dims, pooled, width=1.0, color='C2')
    axes[1, 2].set_title('pooled token before Last LN (mean)', fontsize=9)
    for ax in axes[1]:
        ax.axhline(0.0, color='grey', linewidth=0.6)
        ax.set_xlabel('dim', fontsize=8)
        ax.tick_params(labelsize=7)
    after = 'y = LN(x_out) + PE' if numbers['pe_in_last_norm'] else 'LN(x_out)'
    fig.suptitle(
        f"{label}: method={summary.method}, pooled = {numbers['pooled']}; "
        f"cos(before, {after}) = {fmt(numbers['cosine_of_batch_means'], 4)} "
        f"(batch means), {fmt(numbers['cosine_per_image_mean'], 4)} "
        f'(per image); {summary.num_images} images', fontsize=9)
    return save_figure(fig, path)


def main(argv=None):
    args = parse_args(argv)
    summary = summarize_model(args, args.config, args.checkpoint)
    numbers = last_norm_numbers(summary)
    label = osp.splitext(osp.basename(args.config))[0]
    png = plot(summary, numbers, osp.join(args.out_dir, 'last_ln_stats.png'),
               label)
    numbers.update(config=args.config, checkpoint=args.checkpoint,
                   gamma=summary.last_norm.gamma,
                   beta=summary.last_norm.beta)
    json_path = write_json(osp.join(args.out_dir, 'last_ln_stats.json'),
                           numbers)
    print(f"var(beta) = {fmt(numbers['beta_variance'], 4)}, "
          f"cos(pooled before, after) = "
          f"{fmt(numbers['cosine_of_batch_means'], 4)} (batch means), "
          f"{fmt(numbers['cosine_per_image_mean'], 4)} (per image)")
    print(f'wrote {png}, {json_path}')
    return numbers


if __name__ == '__main__':
    main()
