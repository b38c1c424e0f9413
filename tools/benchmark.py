"""Speed and peak memory of our DeiT models side by side with timm and
mmpretrain, in one process.

Every model is built once and warmed up; then each round times every row
once (rows rotated round by round), for inference (eval, no_grad) and a
train step (forward, cross-entropy, backward, AdamW step), in fp32 and
autocast bf16 (fp16 too on CUDA), eager and with ``--compile`` also
``torch.compile``. On the CPU our rows also infer in int8 with each
``--int8`` scheme (mmmpvg.deploy.quantization), and every inference row
gets its speed relative to timm fp32 eager in the same round. A GEMM of the
model's MLP shape, timed in the same rounds, gives the machine's own matmul
throughput. The CPU's instruction sets head the output and the JSON.

    python tools/benchmark.py --arch deit-tiny --batch-size 32 --rounds 10 \
        --compile [--int8 pt2e dynamic onnxruntime] [--device cuda] \
        [--json out.json]
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

from mmmpvg.deploy.quantization import SCHEMES as INT8_SCHEMES
from mmmpvg.utils.benchmarking import (PRECISIONS, autocast, cpu_isa,
                                       format_isa, format_spread,
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
    parser.add_argument(
        '--int8', nargs='*', choices=list(INT8_SCHEMES),
        help='int8 inference schemes timed for our rows on the CPU '
        '(default: onnxruntime where CPU inference is timed; none without '
        'arguments)')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory pass')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', help='write every number to this file')
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type == 'cuda' and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: torch {torch.__version__} '
                     'sees no CUDA device here.')
    if args.precisions is None:
        args.precisions = ['fp32', 'fp16', 'bf16'] \
            if args.device.type == 'cuda' else ['fp32', 'bf16']
    if args.img_size % PATCH:
        parser.error(f'--img-size must be a multiple of {PATCH}.')
    if 'fp16' in args.precisions and args.device.type != 'cuda':
        parser.error('fp16 autocast is for CUDA; use bf16 on the CPU.')
    if args.int8 is None:
        args.int8 = ['onnxruntime'] if args.device.type == 'cpu' and \
            'inference' in args.modes else []
    if args.int8 and (args.device.type != 'cpu' or
                      'inference' not in args.modes):
        parser.error('--int8 times CPU inference: use it with --device cpu '
                     'and the inference mode.')
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
        # torch.amp.GradScaler is torch >= 2.3; fp16 runs on CUDA only.
        self.scaler = torch.amp.GradScaler(args.device.type) if hasattr(
            torch.amp, 'GradScaler') else torch.cuda.amp.GradScaler(
                enabled=args.device.type == 'cuda')
        self.int8 = {}
        if self.library == 'ours':
            from mmmpvg.deploy.quantization import int8_graph
            self.int8 = {scheme: int8_graph(self.model, self.images, scheme)
                         for scheme in args.int8}

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

    def int8_step(self, scheme):
        def inference():
            with torch.no_grad():
                self.int8[scheme](self.images)

        return inference


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


def int8_variant(scheme):
    """(precision, compiled) of an int8 scheme's rows: only PT2E runs
    through torch.compile (inductor)."""
    return f'int8-{scheme}', scheme == 'pt2e'


# Every inference row's speed is also given against this one, in the same
# round: the reference of the CPU speed targets.
REFERENCE = ('timm', variant_key('inference', 'fp32', False))


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
    for scheme in args.int8:
        precision, compiled = int8_variant(scheme)
        key = variant_key('inference', precision, compiled)
        keys.append((key, 'inference', precision, compiled))
        groups[key] = {name: row.int8_step(scheme)
                       for name, row in rows.items() if row.int8}

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
                     isa=cpu_isa(),
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

    reference_name, reference_key = REFERENCE
    reference = samples.get(reference_key, {}).get(reference_name)
    for key, mode, precision, compiled in keys:
        times = samples[key]
        gemm = result['gemm'].get(precision)
        for name in times:
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
                # int8 rows: no GEMM of their own to compare with
                gemm_fraction=per_image * args.batch_size / median /
                gemm['flops_per_s'] if gemm else None,
                peak_memory_bytes=None if compiled else memory.get(
                    (name, mode, precision)))
            for base in ('default-cls', 'default-gap', 'timm',
                         'mmpretrain'):
                if base in times:
                    entry[f'ratio_to_{base}'] = paired_speed_ratio(
                        times[name], times[base])
            if mode == 'inference' and reference:
                entry['ratio_to_timm_fp32_eager'] = paired_speed_ratio(
                    times[name], reference)
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
    ours = [r for r in find(result, row='mpvg', mode='inference')
            if 'ratio_to_timm_fp32_eager' in r]
    if args.device.type == 'cpu' and ours:
        best = max(ours,
                   key=lambda r: r['ratio_to_timm_fp32_eager']['median'])
        variant = variant_key('inference', best['precision'],
                              best['compiled'])
        # The CPU targets: 2x at batch 32, 1.5x for one image.
        check(f'best mpvg CPU inference / timm fp32 eager, batch '
              f'{args.batch_size} ({variant})',
              best['ratio_to_timm_fp32_eager']['median'],
              1.5 if args.batch_size == 1 else 2.0)
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
        bases = [b for b in ('default-cls', 'default-gap', 'timm',
                             'timm_fp32_eager')
                 if f'ratio_to_{b}' in rows[0]]
        header = ['row', 'img/s', *[f"x {b.replace('_', ' ')}" for b in bases],
                  'GEMM frac', 'peak MiB']
        table = [[r['row'], format_spread(r['images_per_s'], 1),
                  *[format_spread(r[f'ratio_to_{b}'], 3) for b in bases],
                  '-' if r['gemm_fraction'] is None else
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
    # every row x mode x precision is its own graph (older torch names the
    # limit cache_size_limit)
    config = torch._dynamo.config
    setattr(config, 'recompile_limit' if hasattr(config, 'recompile_limit')
            else 'cache_size_limit', 64)
    print(format_isa(cpu_isa()))  # first: it decides what is fast
    result = measure(args, log=lambda m: print(m, file=sys.stderr))
    report(result)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
