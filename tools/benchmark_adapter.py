"""ViT-Adapter-Ti speed and memory per PE method, and mmcv's compiled
multi-scale deformable attention against the pure-PyTorch path.

Every measurement runs in a fresh process so its peak memory is its own;
ratios are against Default / the pure path measured in the same run.

    python tools/benchmark_adapter.py --img-size 512 --batch-size 2 \
        [--attention window] [--device cuda]
"""
import argparse

import torch

from mmmpvg.utils.benchmarking import (in_fresh_process, print_ratio_table,
                                       timed)

METHODS = ('default', 'lape', 'pvg', 'mpvg')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--img-size', type=int, default=512)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument(
        '--attention', choices=['global', 'window'], default='global',
        help='global: the ADE20K config; window: the COCO config (window '
        '14 in two of every three layers)')
    parser.add_argument('--msda-backend', default='auto',
                        choices=['auto', 'pytorch', 'compiled'])
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return parser.parse_args()


def measure_adapter(method, mode, args):
    from mmdet.registry import MODELS

    import mmmpvg.adapter  # noqa: F401
    torch.manual_seed(0)
    device = torch.device(args.device)
    windowed = args.attention == 'window'
    model = MODELS.build(dict(
        type='ViTAdapter', arch='deit-tiny', pe_cfg=dict(method=method),
        drop_path_rate=0.1, window_attn=[windowed, windowed, False] * 4,
        window_size=[14, 14, None] * 4, norm_cfg=dict(type='BN'),
        vit_feature_source='last' if windowed else 'per_interaction',
        msda_backend=args.msda_backend)).to(device)
    model.init_weights()
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size,
                         device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        if mode == 'inference':
            with torch.no_grad():
                model(images)
        else:
            loss = sum(o.float().square().mean() for o in model(images))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    model.train(mode == 'train step')
    calls, peak = timed(step, args.warmup, args.iters, device)
    return calls * args.batch_size, peak


def msda_inputs(args, device):
    """The injector's problem at this image size: 1/16 queries over the
    1/8, 1/16, 1/32 maps, 6 heads of 32 dims, 4 points."""
    s = args.img_size
    shapes = [(s // 8, s // 8), (s // 16, s // 16), (s // 32, s // 32)]
    keys = sum(h * w for h, w in shapes)
    queries = (s // 16)**2
    g = torch.Generator().manual_seed(0)
    value = torch.randn(args.batch_size, keys, 6, 32, generator=g)
    locations = torch.rand(args.batch_size, queries, 6, 3, 4, 2, generator=g)
    weights = torch.rand(args.batch_size, queries, 6, 3, 4,
                         generator=g).softmax(-1)
    return shapes, [t.to(device).requires_grad_()
                    for t in (value, locations, weights)]


def measure_msda(backend, args):
    from mmmpvg.adapter.ms_deform_attn import multi_scale_deformable_attention
    device = torch.device(args.device)
    shapes, (value, locations, weights) = msda_inputs(args, device)

    def step():
        out = multi_scale_deformable_attention(value, shapes, locations,
                                               weights, backend=backend)
        out.sum().backward()

    calls, peak = timed(step, args.warmup, args.iters, device)
    return calls * args.batch_size, peak


def main():
    args = parse_args()
    print(f'ViT-Adapter-Ti, batch {args.batch_size}, {args.img_size}px, '
          f'{args.attention} attention, MSDA backend {args.msda_backend}, '
          f'{args.device}, {args.iters} timed iterations')
    for mode in ('inference', 'train step'):
        print(f'\n{mode}:')
        print_ratio_table({m: in_fresh_process(measure_adapter, m, mode, args) for m in METHODS},
              'default')

    print('\nmulti-scale deformable attention, forward + backward '
          f'(injector at {args.img_size}px):')
    from mmmpvg.adapter.ms_deform_attn import compiled_op_available
    rows = {'pytorch': in_fresh_process(measure_msda, 'pytorch', args)}
    if compiled_op_available(torch.device(args.device)):
        rows['compiled'] = in_fresh_process(measure_msda, 'compiled', args)
    print_ratio_table(rows, 'pytorch')
    if 'compiled' not in rows:
        print(f'  compiled: absent on {args.device} (mmcv has no CPU kernel '
              'for multi-scale deformable attention; needs CUDA and a CUDA '
              'build of mmcv)')


if __name__ == '__main__':
    main()
