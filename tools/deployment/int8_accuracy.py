"""Test top-1 of trained classifiers in fp32, bf16 and int8, side by side.

Reads the runs of tools/demo_digits.py (its results.json: method, seed,
config, checkpoint), runs each checkpoint on its config's test split once
per precision and prints every run's top-1, then per method the mean top-1
and the change from fp32 (mean and min-max over seeds). Each int8 scheme
(mmmpvg.deploy.quantization) runs twice: with the classification head in
fp32 (what ``--int8`` does) and quantized too. bf16 (autocast) runs only
where the CPU computes in bf16 (AVX512-BF16 or AMX); elsewhere it is
emulated and says nothing about deployment.

    python tools/deployment/int8_accuracy.py \\
        work_dirs/demo_digits/results.json \\
        [--schemes pt2e dynamic onnxruntime] [--json out.json]
"""
import argparse
import json
import sys
from collections import defaultdict

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from mmmpvg.deploy import load_model
from mmmpvg.deploy.quantization import SCHEMES, check_int8, int8_graph
from mmmpvg.utils.benchmarking import cpu_isa, format_isa

MAX_LOSS = 0.3  # the target: top-1 points int8 may lose per method


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('results', help="tools/demo_digits.py's results.json")
    parser.add_argument('--schemes', nargs='+', choices=list(SCHEMES),
                        default=list(SCHEMES))
    parser.add_argument('--json', help='write every number to this file')
    return parser.parse_args(argv)


def test_batches(cfg: Config, model):
    """(normalised images, labels) of each batch of the test split, as the
    test loop batches them."""
    init_default_scope(cfg.default_scope)
    loader = Runner.build_dataloader(cfg.test_dataloader)
    batches = []
    for data in loader:
        data = model.data_preprocessor(data, False)
        labels = torch.cat([s.gt_label for s in data['data_samples']])
        batches.append((data['inputs'], labels))
    return batches


def variants(schemes, bf16: bool):
    """name -> (kind, scheme, fp32_head)"""
    out = {'fp32': ('fp32', None, None)}
    if bf16:
        out['bf16'] = ('bf16', None, None)
    for scheme in schemes:
        out[f'int8-{scheme}'] = ('int8', scheme, True)
        out[f'int8-{scheme} (int8 head)'] = ('int8', scheme, False)
    return out


def scores_of(model, batches, kind, scheme, fp32_head):
    if kind == 'int8':
        graph = int8_graph(model, batches[0][0], scheme, fp32_head)
    outs = []
    with torch.no_grad():
        for inputs, _ in batches:
            if kind == 'int8':
                outs.append(graph(inputs))
            else:
                with torch.autocast('cpu', torch.bfloat16,
                                    enabled=kind == 'bf16'):
                    outs.append(model(inputs, mode='tensor').float())
    return torch.cat(outs)


def evaluate(run, names):
    cfg = Config.fromfile(run['config'])
    model, _ = load_model(cfg, run['checkpoint'])
    batches = test_batches(cfg, model)
    labels = torch.cat([b[1] for b in batches])
    scores = {name: scores_of(model, batches, *spec)
              for name, spec in names.items()}
    fp32 = scores['fp32']
    out = {}
    for name, s in scores.items():
        out[name] = dict(
            top1=100.0 * float((s.argmax(1) == labels).float().mean()),
            flips=int((s.argmax(1) != fp32.argmax(1)).sum()),
            max_abs_logit_diff=float((s - fp32).abs().max()))
    return dict(method=run['method'], seed=run['seed'],
                num_images=len(labels), **{'variants': out})


def summarize(evaluated, names):
    by_method = defaultdict(list)
    for e in evaluated:
        by_method[e['method']].append(e)
    summary = {}
    for method, runs in by_method.items():
        summary[method] = {}
        for name in names:
            top1 = np.array([r['variants'][name]['top1'] for r in runs])
            change = top1 - np.array([r['variants']['fp32']['top1']
                                      for r in runs])
            summary[method][name] = dict(
                top1_mean=float(top1.mean()),
                top1_std=float(top1.std(ddof=1)) if len(top1) > 1 else 0.,
                change_mean=float(change.mean()),
                change_min=float(change.min()),
                change_max=float(change.max()),
                flips=[r['variants'][name]['flips'] for r in runs],
                max_abs_logit_diff=max(r['variants'][name][
                    'max_abs_logit_diff'] for r in runs))
    return summary


def report(evaluated, summary, names):
    width = max(map(len, names))
    print(f"\nEvery run (top-1 %, [argmax flips vs fp32 of "
          f"{evaluated[0]['num_images']} images]):")
    for e in evaluated:
        cells = '  '.join(f"{n} {v['top1']:.2f} [{v['flips']}]"
                          for n, v in e['variants'].items())
        print(f"  {e['method']:<12} seed {e['seed']}: {cells}")
    print('\nPer method over seeds: mean top-1 ± std, change from fp32 '
          'mean [min, max] in points, flips per seed, max |logit - fp32|:')
    verdicts = []
    for method, entries in summary.items():
        print(f'  {method}')
        for name, s in entries.items():
            print(f"    {name:<{width}}  {s['top1_mean']:6.2f} ± "
                  f"{s['top1_std']:4.2f}  {s['change_mean']:+.2f} "
                  f"[{s['change_min']:+.2f}, {s['change_max']:+.2f}]  "
                  f"flips {s['flips']}  {s['max_abs_logit_diff']:.3f}")
            if name.startswith('int8') and '(int8 head)' not in name:
                verdicts.append((method, name, s['change_mean']))
    print(f'\ntargets (measured, not asserted): top-1 lost <= {MAX_LOSS} '
          'points per method (mean over seeds)')
    for method, name, change in verdicts:
        print(f"  {'PASS' if -change <= MAX_LOSS else 'FAIL'}  {method} "
              f'{name}: {change:+.2f}')


def main(argv=None):
    args = parse_args(argv)
    check_int8('mmpretrain')
    MMLogger.get_current_instance().setLevel('WARNING')
    isa = cpu_isa()
    print(format_isa(isa))
    with open(args.results) as f:
        runs = json.load(f)['runs']
    names = variants(args.schemes, isa['avx512_bf16'] or isa['amx_bf16'])
    evaluated = []
    for run in sorted(runs, key=lambda r: (r['method'], r['seed'])):
        evaluated.append(evaluate(run, names))
        fp32 = evaluated[-1]['variants']['fp32']['top1']
        print(f"{run['method']} seed {run['seed']}: fp32 {fp32:.2f} %",
              file=sys.stderr, flush=True)
    summary = summarize(evaluated, names)
    report(evaluated, summary, names)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(command=' '.join(['python'] + sys.argv), isa=isa,
                           threads=torch.get_num_threads(), runs=evaluated,
                           summary=summary), f, indent=1)


if __name__ == '__main__':
    main()
