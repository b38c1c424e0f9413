"""CPU latency of the exported ONNX model in ONNX Runtime beside our
PyTorch eval forward (fp32), side by side in one process.

    python tools/deployment/benchmark_onnx.py CONFIG [--checkpoint CKPT] \\
        [--shape H W] [--batch 1] [--rounds 7] [--iters 20] [--threads 1]

The model is exported to a temporary file first. Rounds interleave the two
runtimes (alternating which goes first) so load changes on a shared
machine hit both; each round times ``--iters`` calls of one batch. Reported:
median and min-max of ms per batch over the rounds, and the median ratio.
"""
import argparse
import os.path as osp
import statistics
import tempfile
import time

import numpy as np
import torch
from mmengine.config import Config

from mmmpvg.deploy import export_module, export_onnx, load_model, model_task


def ms_per_call(fn, iters):
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    task = model_task(cfg)
    if args.shape:
        shape = tuple(args.shape)
    else:
        size = cfg.model.backbone.get('img_size', 224)
        shape = (size, size) if isinstance(size, int) else tuple(size)
    model, task = load_model(cfg, args.checkpoint)
    graph = export_module(model, task)
    img = torch.randn(args.batch, 3, *shape)
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'model.onnx')
        export_onnx(model, task, path, shape)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options,
                                       providers=['CPUExecutionProvider'])
    feed = {'input': img.numpy()}

    def run_torch():
        with torch.no_grad():
            graph(img)

    def run_ort():
        session.run(None, feed)

    runners = dict(pytorch=run_torch, onnxruntime=run_ort)
    for fn in runners.values():  # warm-up (PE cache, ORT allocations)
        ms_per_call(fn, 3)
    times = {name: [] for name in runners}
    for r in range(args.rounds):
        order = list(runners) if r % 2 == 0 else list(runners)[::-1]
        for name in order:
            times[name].append(ms_per_call(runners[name], args.iters))

    print(f'{args.config} at {shape[0]}x{shape[1]}, batch {args.batch}, '
          f'{args.threads} thread(s), fp32, {args.rounds} interleaved '
          f'rounds x {args.iters} calls (shared machine: an upper bound)')
    base = statistics.median(times['pytorch'])
    print(f"  {'runtime':<12} {'median ms':>10} {'min-max ms':>17} "
          f"{'x pytorch':>10}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f'  {name:<12} {med:10.2f} {min(values):8.2f}-'
              f'{max(values):<8.2f} {med / base:10.3f}')
    ratios = np.array(times['onnxruntime']) / np.array(times['pytorch'])
    print(f'  per-round onnxruntime/pytorch: median {np.median(ratios):.3f}, '
          f'min-max {ratios.min():.3f}-{ratios.max():.3f}')


if __name__ == '__main__':
    main()
