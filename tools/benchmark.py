"""Throughput and peak memory of each PE method, side by side with Default.

Each (method, mode) runs in a fresh process so peak memory is its own.
Ratios are against Default measured in the same run.

    python tools/benchmark.py --arch deit-tiny --batch-size 32 [--device cuda]
"""
import argparse
import multiprocessing as mp
import resource
import time

import torch

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


def current_rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(method, mode, args):
    """Images/s and peak memory (bytes) of one method in one mode."""
    from mmpretrain.registry import MODELS

    import mmmpvg.models  # noqa: F401
    torch.manual_seed(0)
    device = torch.device(args.device)
    baseline = current_rss_bytes()
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
    for _ in range(args.warmup):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:  # ru_maxrss is in KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 \
            - baseline
    elapsed = time.perf_counter() - start
    return args.batch_size * args.iters / elapsed, peak


def main():
    args = parse_args()
    context = mp.get_context('spawn')
    print(f'{args.arch}, batch {args.batch_size}, {args.img_size}px, '
          f'{args.device}, {args.iters} timed iterations')
    for mode in ('inference', 'train step'):
        rows = {}
        for method in METHODS:
            with context.Pool(1, maxtasksperchild=1) as pool:
                rows[method] = pool.apply(measure, (method, mode, args))
        base_speed, base_mem = rows['default']
        print(f'\n{mode}:')
        print(f"  {'method':<8} {'images/s':>9} {'x Default':>9} "
              f"{'peak MiB':>9} {'x Default':>9}")
        for method, (speed, mem) in rows.items():
            print(f'  {method:<8} {speed:9.1f} {speed / base_speed:9.3f} '
                  f'{mem / 2**20:9.1f} {mem / base_mem:9.3f}')


if __name__ == '__main__':
    main()
