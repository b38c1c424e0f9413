"""Refuse a launch that asks one node for more processes than it can run.

    python -m mmmpvg.engine.launch_check NPROC_PER_NODE

tools/dist_train.sh and dist_test.sh call this before torchrun: one process
per GPU with CUDA, at most one per CPU core without it (more than that and
every process waits for a core; a job of that size belongs on more nodes).
"""
import os
import sys

import torch


def process_limit():
    """How many processes this node runs side by side, and of what."""
    if torch.cuda.is_available():
        return torch.cuda.device_count(), 'visible GPU(s)'
    return len(os.sched_getaffinity(0)), 'CPU core(s) and no GPU'


def check_process_count(requested: str) -> None:
    if not requested.isdigit() or int(requested) < 1:
        raise SystemExit(f'error: the process count must be a positive '
                         f'integer, got {requested!r}.')
    available, what = process_limit()
    if int(requested) > available:
        raise SystemExit(
            f'error: asked for {requested} processes on this node, but it has '
            f'{available} {what}: pass at most {available}, or spread the '
            'job over nodes (NNODES, NODE_RANK, MASTER_ADDR).')


if __name__ == '__main__':
    check_process_count(sys.argv[1] if len(sys.argv) > 1 else '')
