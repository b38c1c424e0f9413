"""Speed and peak memory of our DeiT models side by side with timm and
mmpretrain, in one process.

Every model is built once and warmed up; then each round times every row
once (rows rotated round by round), for inference (eval, no_grad) and a
train step (forward, cross-entropy, backward, AdamW step), in fp32 and
autocast bf16 (fp16 too on CUDA), eager and with ``--compile`` also
``torch.compile``. A GEMM of the model's MLP shape, timed in the same
rounds, gives the machine's own matmul throughput.

    python tools/benchmark.py --arch deit-tiny --batch-size 32 --rounds 10 \
        --compile [--device cuda] [--json out.json]
"""
import argparse
import glob
import json
import os
import platform
import sys

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger

from mmmpvg.utils.benchmarking import (PRECISIONS, autocast, format_spread,
                                       format_table, format_targets,
                                       interleaved_rounds, paired_speed_ratio,
                                       peak_memory, spread, target_check,
                                       vit_flops)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = ('deit-tiny', 'deit-small', 'deit-base')
# row -> (library, our PE method, pooling). The paper pairs Default with the
# class token and PVG/MPVG with GAP; 'default-gap' is Default at MPVG's
# token count.
ROWS = {
    'timm': ('timm', None, 'cls'),
    'mmpretrain': ('mmpretrain', None, 'cls'),
    'default-cls': ('ours', 'default', 'cls'),
    'default-gap': ('ours', 'default', 'avg'),
    'lape': ('ours', 'lape', 'cls'),
    'pvg': ('ours', 'pvg', 'avg'),
    'mpvg': ('ours', 'mpvg', 'avg'),
}
MODES = ('inference', 'train')
NUM_CLASSES = 1000
PATCH = 16
DROP_PATH = 0.1  # DeiT's (and our configs') value, for every row alike


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='deit-tiny', choices=ARCHS)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--rounds', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed calls per row before the rounds')
    parser.add_argument('--rows', nargs='+', choices=list(ROWS),
                        default=list(ROWS))
    parser.add_argument('--modes', nargs='+', choices=MODES,
                        default=list(MODES))
    parser.add_argument('--precisions', nargs='+', choices=list(PRECISIONS),
                        help='default: fp32 bf16 (CPU), fp32 fp16 bf16 '
                        '(CUDA)')
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile of every row')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory pass')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', help='write every number to this file')
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.precisions is None:
        args.precisions = ['fp32', 'fp16', 'bf16'] \
            if args.device.type == 'cuda' else ['fp32', 'bf16']
    if args.img_size % PATCH:
        parser.error(f'--img-size must be a multiple of {PATCH}.')
    if 'fp16' in args.precisions and args.device.type != 'cuda':
        parser.error('fp16 autocast is for CUDA; use bf16 on the CPU.')
    return args


def build_model(row, args):
    """The row's classifier (backbone + 1000-class head), initialised."""
    library, method, pool = ROWS[row]
    torch.manual_seed(0)
    if library == 'timm':
        import timm
        return timm.create_model(
            f"deit_{args.arch.split('-')[1]}_patch16_224", pretrained=False,
            img_size=args.img_size, drop_path_rate=DROP_PATH,
            num_classes=NUM_CLASSES)
    from mmengine.config import Config
    from mmpretrain.registry import MODELS

    import mmmpvg.models  # noqa: F401
    if library == 'mmpretrain':
        dims = MODELS.get('VisionTransformer').arch_zoo[args.arch][
            'embed_dims']
        cfg = dict(
            type='ImageClassifier',
            backbone=dict(type='VisionTransformer', arch=args.arch,
                          img_size=args.img_size, patch_size=PATCH,
                          drop_path_rate=DROP_PATH),
            head=dict(type='VisionTransformerClsHead',
                      num_classes=NUM_CLASSES, in_channels=dims))
    else:  # our config of that method, at the row's pooling
        path, = glob.glob(os.path.join(REPO, 'configs', 'deit',
                                       f'{args.arch}_{method}_*.py'))
        cfg = Config.fromfile(path).model
        cfg.backbone.update(img_size=args.img_size, global_pool=pool,
                            drop_path_rate=DROP_PATH)
        cfg.pop('train_cfg', None)  # Mixup/CutMix: not part of the model
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def model_flops(row, args):
    """Analytic forward FLOPs per image (matmuls, 2 per multiply-add)."""
    from mmpretrain.registry import MODELS
    arch = MODELS.get('VisionTransformer').arch_zoo[args.arch]
    patches = (args.img_size // PATCH)**2
    tokens = patches + (ROWS[row][2] == 'cls')
    return vit_flops(tokens, arch['embed_dims'], arch['num_layers'],
                     arch['feedforward_channels'], patches,
                     3 * PATCH * PATCH, NUM_CLASSES)


class Row:
    """One model with its optimizer, inputs and step functions."""

    def __init__(self, name, args):
        self.name = name
        self.library = ROWS[name][0]
        self.device = args.device
        self.model = build_model(name, args).to(args.device)
        self.compiled = torch.compile(self.model) if args.compile else None
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-6)
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(args.batch_size, 3, args.img_size,
                                  args.img_size, generator=generator).to(
                                      args.device)
        self.labels = torch.randint(0, NUM_CLASSES, (args.batch_size, ),
                                    generator=generator).to(args.device)
        self.scaler = torch.amp.GradScaler(args.device.type)

    def logits(self, compiled):
        model = self.compiled if compiled else self.model
        if self.library == 'timm':
            return model(self.images)
        return model(self.images, mode='tensor')

    def step(self, mode, precision, compiled):
        """The function one timed call runs."""
        def inference():
            self.model.eval()
            with torch.no_grad(), autocast(self.device, precision):
                self.logits(compiled)

        def train():
            self.model.train()
            with autocast(self.device, precision):
                loss = F.cross_entropy(self.logits(compiled).float(),
                                       self.labels)
            self.optimizer.zero_grad(set_to_none=True)
            if precision == 'fp16':  # fp16 needs loss scaling
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()

        return inference if mode == 'inference' else train


def gemm_step(args, precision):
    """One MLP-shaped GEMM: (batch * tokens, dims) x (dims, 4 dims)."""
    from mmpretrain.registry import MODELS
    arch = MODELS.get('VisionTransformer').arch_zoo[args.arch]
    m = args.batch_size * ((args.img_size // PATCH)**2 + 1)
    k, n = arch['embed_dims'], arch['feedforward_channels']
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(args.device)
    w = torch.randn(n, k, generator=generator).to(args.device)

    def gemm():
        with torch.no_grad(), autocast(args.device, precision):
            F.linear(a, w)

    return gemm, 2 * m * k * n, (m, k, n)


def variant_key(mode, precision, compiled):
    return f"{mode}/{precision}/{'compiled' if compiled else 'eager'}"


def measure(args, log=print):
    """Every number of the run as a JSON-able dict."""
    torch.manual_seed(0)
    rows = {name: Row(name, args) for name in args.rows}
    compile_options = (False, True) if args.compile else (False, )
    groups, keys, gemm_info = {}, [], {}
    for precision in args.precisions:
        gemm, flops, shape = gemm_step(args, precision)
        groups[('gemm', precision)] = {'gemm': gemm}
        gemm_info[precision] = dict(flops=flops, shape_mkn=shape)
        for mode in args.modes:
            for compiled in compile_options:
                key = variant_key(mode, precision, compiled)
                keys.append((key, mode, precision, compiled))
                groups[key] = {name: row.step(mode, precision, compiled)
                               for name, row in rows.items()}

    samples = interleaved_rounds(groups, args.rounds, args.warmup,
                                 args.device, log)

    result = dict(
        command=' '.join([os.path.basename(sys.executable)] + sys.argv),
        config=dict(arch=args.arch, img_size=args.img_size,
                    batch_size=args.batch_size, rounds=args.rounds,
                    warmup=args.warmup, device=str(args.device),
                    drop_path_rate=DROP_PATH),
        machine=dict(platform=platform.platform(),
                     processor=platform.processor(),
                     torch=torch.__version__,
                     threads=torch.get_num_threads(),
                     cuda=torch.cuda.get_device_name(args.device)
                     if args.device.type == 'cuda' else None),
        gemm={}, rows=[])
    for precision in args.precisions:
        seconds = samples[('gemm', precision)]['gemm']
        flops = gemm_info[precision]['flops']
        result['gemm'][precision] = dict(
            gemm_info[precision], seconds=spread(seconds),
            flops_per_s=flops / spread(seconds)['median'])

    memory = {}
    if not args.no_memory:
        for name, row in rows.items():
            for mode in args.modes:
                for precision in args.precisions:
                    fn = row.step(mode, precision, compiled=False)
                    memory[name, mode, precision], method = peak_memory(
                        fn, args.device,
                        (row.model, row.optimizer, row.images, row.labels))
        result['memory_method'] = method

    for key, mode, precision, compiled in keys:
        times = samples[key]
        gemm_rate = result['gemm'][precision]['flops_per_s']
        for name in rows:
            per_image = model_flops(name, args) * (3 if mode == 'train'
                                                   else 1)
            median = spread(times[name])['median']
            entry = dict(
                row=name, mode=mode, precision=precision, compiled=compiled,
                seconds=spread(times[name]),
                seconds_per_round=times[name],
                images_per_s=spread(
                    [args.batch_size / s for s in times[name]]),
                flops_per_image=per_image,
                gemm_fraction=per_image * args.batch_size / median /
                gemm_rate,
                peak_memory_bytes=None if compiled else memory.get(
                    (name, mode, precision)))
            for base in ('default-cls', 'default-gap', 'timm',
                         'mmpretrain'):
                if base in times:
                    entry[f'ratio_to_{base}'] = paired_speed_ratio(
                        times[name], times[base])
            result['rows'].append(entry)
    result['targets'] = targets(result, args)
    return result


def find(result, **match):
    return [r for r in result['rows']
            if all(r[k] == v for k, v in match.items())]


def targets(result, args):
    """The speed and memory targets of docs/en/user_guides/benchmarks.md
    next to the measured values (printed, never asserted)."""
    checks = []

    def check(name, value, bound, above=True):
        checks.append(target_check(name, value, bound, above))

    for r in find(result, row='mpvg'):
        variant = variant_key(r['mode'], r['precision'], r['compiled'])
        bound = 1.0 if r['mode'] == 'inference' else 0.97
        for base in ('default-gap', 'default-cls'):
            if f'ratio_to_{base}' in r:
                check(f'mpvg / {base} speed, {variant}',
                      r[f'ratio_to_{base}']['median'], bound)
    for r in find(result, row='default-cls'):
        variant = variant_key(r['mode'], r['precision'], r['compiled'])
        for base in ('timm', 'mmpretrain'):
            if f'ratio_to_{base}' in r:
                check(f'default-cls / {base} speed, {variant}',
                      r[f'ratio_to_{base}']['median'], 1.0)
    reference = find(result, row='timm', mode='inference', precision='fp32',
                     compiled=False)
    ours = find(result, row='mpvg', mode='inference')
    if args.device.type == 'cpu' and reference and ours:
        best = max(ours, key=lambda r: r['images_per_s']['median'])
        variant = variant_key('inference', best['precision'],
                              best['compiled'])
        check(f'best mpvg CPU inference / timm fp32 eager ({variant})',
              best['images_per_s']['median'] /
              reference[0]['images_per_s']['median'], 2.0)
    for r in find(result, row='mpvg', mode='train', compiled=False):
        for base in ('default-gap', 'default-cls'):
            other = find(result, row=base, mode='train',
                         precision=r['precision'], compiled=False)
            if other and r['peak_memory_bytes'] and \
                    other[0]['peak_memory_bytes']:
                check(f"mpvg / {base} peak train memory, {r['precision']}",
                      r['peak_memory_bytes'] /
                      other[0]['peak_memory_bytes'], 1.02, above=False)
    return checks


def report(result):
    cfg = result['config']
    print(f"\n{cfg['arch']}, batch {cfg['batch_size']}, {cfg['img_size']} px,"
          f" {cfg['device']}, {result['machine']['threads']} thread(s), "
          f"{cfg['rounds']} interleaved rounds after {cfg['warmup']} warm-up "
          'calls; median [min-max]')
    print('ratios: speed of the row / speed of the base in the same round; '
          'x default-cls is the paper\'s pairing (Default with the class '
          'token, 197 tokens at 224 px), x default-gap the same token count '
          'as PVG/MPVG (196)')
    for precision, g in result['gemm'].items():
        print(f"GEMM {precision} {'x'.join(map(str, g['shape_mkn']))}: "
              f"{g['flops_per_s'] / 1e9:.1f} GFLOP/s")
    if 'memory_method' in result:
        print(f"peak memory: {result['memory_method']}")

    variants = dict.fromkeys(
        (r['mode'], r['precision'], r['compiled']) for r in result['rows'])
    for mode, precision, compiled in variants:
        rows = find(result, mode=mode, precision=precision,
                    compiled=compiled)
        bases = [b for b in ('default-cls', 'default-gap', 'timm')
                 if f'ratio_to_{b}' in rows[0]]
        header = ['row', 'img/s', *[f'x {b}' for b in bases],
                  'GEMM frac', 'peak MiB']
        table = [[r['row'], format_spread(r['images_per_s'], 1),
                  *[format_spread(r[f'ratio_to_{b}'], 3) for b in bases],
                  f"{r['gemm_fraction']:.2f}",
                  '-' if r['peak_memory_bytes'] is None else
                  f"{r['peak_memory_bytes'] / 2**20:.1f}"]
                 for r in rows]
        print(f'\n{variant_key(mode, precision, compiled)}:')
        print(format_table(header, table))
    print('\n' + format_targets(result['targets']))


def main(argv=None):
    args = parse_args(argv)
    # init_weights' per-parameter report would bury the tables
    MMLogger.get_current_instance().setLevel('WARNING')
    # every row x mode x precision is its own graph
    torch._dynamo.config.recompile_limit = 64
    result = measure(args, log=lambda m: print(m, file=sys.stderr))
    report(result)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
