"""Side-by-side speed and memory measurement for the tools/benchmark*.py."""
import multiprocessing as mp
import resource
import time

import torch


def current_rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def timed(step, warmup, iters, device):
    """(calls/s, peak bytes) of ``step()`` after ``warmup`` calls.

    Peak memory is CUDA's allocator peak on a GPU, and on CPU the growth of
    the process's peak RSS over its size before the first call: run each
    measurement in its own process (:func:`in_fresh_process`).
    """
    baseline = current_rss_bytes()
    for _ in range(warmup):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:  # ru_maxrss is in KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 \
            - baseline
    return iters / (time.perf_counter() - start), peak


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a new (spawned) process, so its memory is its own."""
    with mp.get_context('spawn').Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)


def print_ratio_table(rows, base):
    """Print {name: (images/s, peak bytes)} with ratios to ``rows[base]``."""
    base_speed, base_mem = rows[base]
    print(f"  {'':<10} {'images/s':>9} {'x ' + base:>10} {'peak MiB':>9} "
          f"{'x ' + base:>10}")
    for name, (speed, mem) in rows.items():
        print(f'  {name:<10} {speed:9.2f} {speed / base_speed:10.3f} '
              f'{mem / 2**20:9.1f} {mem / max(base_mem, 1):10.3f}')
