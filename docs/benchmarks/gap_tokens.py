"""Why our GAP models (196 tokens) ran slower than class-token ones (197).

Interleaved single-process microbenchmarks, fp32, eval + no_grad unless a
row says train: scaled_dot_product_attention alone, one transformer layer on
a contiguous and on a transposed (patch-embed layout) token tensor, and the
whole DeiT backbone with either layout entering layer 0.

    python docs/benchmarks/gap_tokens.py --batch-size 32 --rounds 10
"""
import argparse

import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401
from mmmpvg.utils.benchmarking import (format_table, interleaved_rounds,
                                       paired_speed_ratio, spread)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--rounds', type=int, default=10)
    args = parser.parse_args()
    device = torch.device('cpu')
    b, dims, heads = args.batch_size, 192, 3
    g = torch.Generator().manual_seed(0)

    def qkv(n):
        return [torch.randn(b, heads, n, dims // heads, generator=g)
                for _ in range(3)]

    q196, q197 = qkv(196), qkv(197)
    layer = MODELS.build(dict(type='PEVisionTransformer', arch='deit-tiny')
                         ).layers[0].eval()
    x197 = torch.randn(b, 197, dims, generator=g)
    x196 = torch.randn(b, 196, dims, generator=g)
    # What PatchEmbed returns: (B, C, h*w).transpose(1, 2)
    x196_t = x196.transpose(1, 2).contiguous().transpose(1, 2)
    backbones = {
        pool: MODELS.build(dict(type='PEVisionTransformer', arch='deit-tiny',
                                global_pool=pool,
                                pe_cfg=dict(method='default')))
        for pool in ('cls', 'avg')
    }
    for backbone in backbones.values():
        backbone.eval()
    images = torch.randn(b, 3, 224, 224, generator=g)

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    def train(fn):
        def run():
            fn().sum().backward()
        return run

    groups = {
        'sdpa': {
            '197 tokens': no_grad(lambda: F.scaled_dot_product_attention(
                *q197)),
            '196 tokens': no_grad(lambda: F.scaled_dot_product_attention(
                *q196)),
        },
        'one layer': {
            '197 contiguous': no_grad(lambda: layer(x197)),
            '196 contiguous': no_grad(lambda: layer(x196)),
            '196 transposed': no_grad(lambda: layer(x196_t)),
        },
        'backbone inference': {
            'cls (197)': no_grad(lambda: backbones['cls'](images)),
            'gap (196)': no_grad(lambda: backbones['avg'](images)),
        },
        'backbone train': {
            'cls (197)': train(lambda: backbones['cls'](images)[0]),
            'gap (196)': train(lambda: backbones['avg'](images)[0]),
        },
    }
    samples = interleaved_rounds(groups, args.rounds, 1, device)
    for key, rows in samples.items():
        base = next(iter(rows))
        table = [[name, f"{spread(s)['median'] * 1e3:.2f}",
                  f"{paired_speed_ratio(s, rows[base])['median']:.3f}"]
                 for name, s in rows.items()]
        print(f'\n{key} (batch {b}, {torch.get_num_threads()} thread(s)):')
        print(format_table(['', 'ms', f'speed x {base}'], table))


if __name__ == '__main__':
    main()
