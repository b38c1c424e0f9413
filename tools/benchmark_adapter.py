"""ViT-Adapter-Ti speed and peak memory per PE method, side by side in one
process, and mmcv's compiled multi-scale deformable attention (MSDA) against
the pure-PyTorch path.

Each method's adapter is built once and warmed up; each round times every
method once (order rotated round by round) for inference (eval, no_grad)
and a train step (forward, a loss on every output map, backward, AdamW
step). Ratios are to Default in the same round.

    python tools/benchmark_adapter.py --img-size 512 --batch-size 2 \
        --rounds 10 [--attention window] [--device cuda] [--json out.json]
"""
import argparse
import json
import os
import platform
import sys

import torch

from mmmpvg.utils.benchmarking import (PRECISIONS, autocast, format_spread,
                                       format_table, format_targets,
                                       interleaved_rounds, paired_speed_ratio,
                                       peak_memory, spread, target_check)

METHODS = ('default', 'lape', 'pvg', 'mpvg')
MODES = ('inference', 'train')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--img-size', type=int, default=512)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--modes', nargs='+', choices=MODES,
                        default=list(MODES))
    parser.add_argument('--precision', choices=list(PRECISIONS),
                        default='fp32')
    parser.add_argument(
        '--attention', choices=['global', 'window'], default='global',
        help='global: the ADE20K config; window: the COCO config (window '
        '14 in two of every three layers)')
    parser.add_argument('--msda-backend', default='auto',
                        choices=['auto', 'pytorch', 'compiled'],
                        help='MSDA implementation inside the adapters')
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', help='write every number to this file')
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type == 'cuda' and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: torch {torch.__version__} '
                     'sees no CUDA device here.')
    if args.img_size % 32:
        parser.error('--img-size must be a multiple of 32 (the 1/32 map).')
    return args


def build_adapter(method, args):
    from mmdet.registry import MODELS

    import mmmpvg.adapter  # noqa: F401
    torch.manual_seed(0)
    windowed = args.attention == 'window'
    model = MODELS.build(dict(
        type='ViTAdapter', arch='deit-tiny', pe_cfg=dict(method=method),
        drop_path_rate=0.1, window_attn=[windowed, windowed, False] * 4,
        window_size=[14, 14, None] * 4, norm_cfg=dict(type='BN'),
        vit_feature_source='last' if windowed else 'per_interaction',
        msda_backend=args.msda_backend))
    model.init_weights()
    return model.to(args.device)


def adapter_steps(method, args, images):
    """(model, optimizer, {mode: step})."""
    model = build_adapter(method, args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def inference():
        model.eval()
        with torch.no_grad(), autocast(args.device, args.precision):
            model(images)

    def train():
        model.train()
        with autocast(args.device, args.precision):
            loss = sum(o.float().square().mean() for o in model(images))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, optimizer, dict(inference=inference, train=train)


def msda_step(backend, args):
    """Forward + backward of MSDA on the injector's problem at this image
    size: 1/16 queries over the 1/8, 1/16, 1/32 maps, 6 heads of 32 dims,
    4 points."""
    from mmmpvg.adapter.ms_deform_attn import multi_scale_deformable_attention
    s = args.img_size
    shapes = [(s // 8, s // 8), (s // 16, s // 16), (s // 32, s // 32)]
    keys = sum(h * w for h, w in shapes)
    queries = (s // 16)**2
    g = torch.Generator().manual_seed(0)
    value = torch.randn(args.batch_size, keys, 6, 32, generator=g)
    locations = torch.rand(args.batch_size, queries, 6, 3, 4, 2, generator=g)
    weights = torch.rand(args.batch_size, queries, 6, 3, 4,
                         generator=g).softmax(-1)
    inputs = [t.to(args.device).requires_grad_()
              for t in (value, locations, weights)]
    value, locations, weights = inputs

    def step():
        out = multi_scale_deformable_attention(value, shapes, locations,
                                               weights, backend=backend)
        out.sum().backward()

    return step


def measure(args, log=print):
    from mmmpvg.adapter.ms_deform_attn import compiled_op_available
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size,
                         generator=g).to(args.device)
    built = {m: adapter_steps(m, args, images) for m in METHODS}
    groups = {mode: {m: built[m][2][mode] for m in METHODS}
              for mode in args.modes}
    compiled = compiled_op_available(args.device)
    groups['msda'] = {'pytorch': msda_step('pytorch', args)}
    if compiled:
        groups['msda']['compiled'] = msda_step('compiled', args)
    samples = interleaved_rounds(groups, args.rounds, args.warmup,
                                 args.device, log)

    result = dict(
        command=' '.join([os.path.basename(sys.executable)] + sys.argv),
        config=dict(vars(args), device=str(args.device)),
        machine=dict(platform=platform.platform(), torch=torch.__version__,
                     threads=torch.get_num_threads(),
                     cuda=torch.cuda.get_device_name(args.device)
                     if args.device.type == 'cuda' else None),
        rows=[], msda=[],
        msda_compiled_op=('measured' if compiled else
                          f'absent on {args.device}: mmcv has no CPU kernel '
                          'for multi-scale deformable attention (needs '
                          'CUDA and a CUDA build of mmcv)'))
    for mode in args.modes:
        for method in METHODS:
            seconds = samples[mode][method]
            model, optimizer, steps = built[method]
            peak = None
            if not args.no_memory:
                peak, result['memory_method'] = peak_memory(
                    steps[mode], args.device, (model, optimizer, images))
            result['rows'].append(dict(
                method=method, mode=mode, seconds=spread(seconds),
                seconds_per_round=seconds,
                images_per_s=spread([args.batch_size / s for s in seconds]),
                ratio_to_default=paired_speed_ratio(
                    seconds, samples[mode]['default']),
                peak_memory_bytes=peak))
    for backend, seconds in samples['msda'].items():
        result['msda'].append(dict(
            backend=backend, seconds=spread(seconds),
            seconds_per_round=seconds,
            ratio_to_pytorch=paired_speed_ratio(
                seconds, samples['msda']['pytorch'])))
    result['targets'] = [
        target_check(f"{r['method']} / default speed, {r['mode']}",
                     r['ratio_to_default']['median'], 0.97)
        for r in result['rows'] if r['method'] != 'default']
    return result


def report(result):
    cfg = result['config']
    print(f"\nViT-Adapter-Ti, batch {cfg['batch_size']}, {cfg['img_size']} "
          f"px, {cfg['attention']} attention, MSDA backend "
          f"{cfg['msda_backend']}, {cfg['precision']}, {cfg['device']}, "
          f"{result['machine']['threads']} thread(s), {cfg['rounds']} "
          'interleaved rounds; median [min-max]; x default: speed ratio to '
          'Default in the same round')
    if 'memory_method' in result:
        print(f"peak memory: {result['memory_method']}")

    for mode in cfg['modes']:
        rows = [r for r in result['rows'] if r['mode'] == mode]
        print(f'\n{mode}:')
        print(format_table(
            ['method', 'img/s', 'x default', 'peak MiB'],
            [[r['method'], format_spread(r['images_per_s'], 2),
              format_spread(r['ratio_to_default'], 3),
              '-' if r['peak_memory_bytes'] is None else
              f"{r['peak_memory_bytes'] / 2**20:.0f}"] for r in rows]))
    print('\nmulti-scale deformable attention, forward + backward '
          '(injector problem):')
    print(format_table(
        ['backend', 'ms', 'x pytorch'],
        [[r['backend'],
          format_spread({k: v * 1e3 for k, v in r['seconds'].items()}, 1),
          format_spread(r['ratio_to_pytorch'], 3)]
         for r in result['msda']]))
    if result['msda_compiled_op'] != 'measured':
        print(f"  compiled: {result['msda_compiled_op']}")
    print('\n' + format_targets(result['targets']))


def main(argv=None):
    args = parse_args(argv)
    result = measure(args, log=lambda m: print(m, file=sys.stderr))
    report(result)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
