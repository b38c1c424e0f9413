"""Throughput and peak memory of each PE method, side by side with Default.

Each (method, mode) runs in a fresh process so peak memory is its own.
Ratios are against Default measured in the same run.

    python tools/benchmark.py --arch deit-tiny --batch-size 32 [--device cuda]
"""
import argparse

import torch

from mmmpvg.utils.benchmarking import (in_fresh_process, print_ratio_table,
                                       timed)

METHODS = {  # the paper's pairing of method and pooling
    'default': 'cls',
    'lape': 'cls',
    'pvg': 'avg',
    'mpvg': 'avg',
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='deit-tiny')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return parser.parse_args()


def measure(method, mode, args):
    """Images/s and peak memory (bytes) of one method in one mode."""
    from mmpretrain.registry import MODELS

    import mmmpvg.models  # noqa: F401
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='PEVisionTransformer', arch=args.arch,
                      img_size=args.img_size, global_pool=METHODS[method],
                      pe_cfg=dict(method=method)),
        head=dict(type='LinearClsHead', num_classes=1000,
                  in_channels=MODELS.get('PEVisionTransformer').arch_zoo[
                      args.arch]['embed_dims']))).to(device)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size,
                         device=device)
    labels = torch.randint(0, 1000, (args.batch_size, ), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        if mode == 'inference':
            with torch.no_grad():
                model(images, mode='tensor')
        else:
            loss = torch.nn.functional.cross_entropy(
                model(images, mode='tensor'), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    model.train(mode == 'train step')
    calls, peak = timed(step, args.warmup, args.iters, device)
    return calls * args.batch_size, peak


def main():
    args = parse_args()
    print(f'{args.arch}, batch {args.batch_size}, {args.img_size}px, '
          f'{args.device}, {args.iters} timed iterations')
    for mode in ('inference', 'train step'):
        print(f'\n{mode}:')
        print_ratio_table(
            {m: in_fresh_process(measure, m, mode, args) for m in METHODS},
            'default')


if __name__ == '__main__':
    main()
