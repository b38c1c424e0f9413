"""What the PE chain costs at inference, beside the whole forward.

The chain (resize, every ``LN'_l``, Swin's PatchMerging of the PE, MPVG's
``LN''``) does not depend on the image, so eval passes reuse it while the
weights it reads keep their values; the check compares the values, since
writes through ``.data`` (EMA swaps) change no version or pointer. This
prints, for the paper's backbones in MPVG at batch 1, the median time of
computing the chain, of the eval forward's cache check, and of a whole eval
forward (which includes the check), interleaved over rounds in one process.

    python docs/benchmarks/pe_chain_cost.py [--rounds 30] [--threads 1]
"""
import argparse
import statistics
import time

import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401

CONFIGS = dict(
    deit_tiny='configs/deit/deit-tiny_mpvg_4xb256_in1k.py',
    swin_tiny='configs/swin/swin-tiny_mpvg_4xb256_in1k.py',
    t2t_vit_7='configs/t2t_vit/t2t-vit-7_mpvg_4xb128_in1k.py',
    ceit_tiny='configs/ceit/ceit-tiny_mpvg_4xb256_in1k.py',
    vit_lite_7='configs/vit_lite/vit-lite-7-4_mpvg_1xb128_cifar100-32px.py',
)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=30)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f'CPU capability: {torch.backends.cpu.get_cpu_capability()}, '
          f'{args.threads} thread(s), batch 1, median of {args.rounds} '
          'interleaved rounds')
    models = {}
    for name, path in CONFIGS.items():
        cfg = Config.fromfile(path)
        backbone = MODELS.build(cfg.model.backbone).eval()
        size = backbone.img_size
        image = torch.randn(1, 3, *size)
        grid = backbone.pe.grid_size
        models[name] = (backbone, image, grid)
    times = {what: {n: [] for n in models}
             for what in ('chain', 'check', 'forward')}
    with torch.no_grad():
        for round_ in range(args.rounds + 2):
            for name, (backbone, image, grid) in models.items():
                downsamples = [s.downsample
                               for s in backbone.pe_stages()[:-1]]
                pos = backbone.pos_embed_param
                runs = dict(
                    chain=lambda: backbone.pe.plan_from(
                        backbone.pe.resized(pos, grid), grid, downsamples),
                    check=lambda: backbone.pe_plan(grid),
                    forward=lambda: backbone(image))
                for what, run in runs.items():
                    elapsed = timed(run)
                    if round_ >= 2:  # warm-up
                        times[what][name].append(elapsed)
    print(f'{"backbone":12} {"chain ms":>9} {"check ms":>9} '
          f'{"forward ms":>11} {"chain/fwd":>10} {"check/fwd":>10}')
    for name in models:
        c, k, f = (statistics.median(times[what][name]) * 1e3
                   for what in ('chain', 'check', 'forward'))
        print(f'{name:12} {c:9.3f} {k:9.3f} {f:11.2f} {c / f:10.2%} '
              f'{k / f:10.2%}')


if __name__ == '__main__':
    main()
