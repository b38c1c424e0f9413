"""Fair side-by-side timing for tools/benchmark*.py.

Everything runs in one process: each model is built once, warmed up, then
timed in interleaved rounds (round r calls every row of a group once, in an
order rotated by r), so slow drifts of a shared machine hit every row alike.
Ratios are paired: row vs base within the same round, then median and range.
"""
import contextlib
import statistics
import time
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import torch

PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for ``'bf16'``/``'fp16'``, nothing for fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f'Unknown precision {precision!r}; choose one of '
                         f'{sorted(PRECISIONS)}.')
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# The instruction sets that decide which low-precision path is fast: bf16
# compute (AVX512-BF16, AMX) and int8 dot products (VNNI in its AVX512 and
# AVX2 forms, AMX); AVX2 alone still multiplies bytes, with 16-bit sums.
ISA_FLAGS = ('avx2', 'avx512_f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16',
             'amx_tile', 'amx_int8', 'amx_bf16')


def _proc_cpuinfo() -> dict:
    """What ``torch.cpu.get_capabilities()`` (torch >= 2.3) reports, read
    from Linux's /proc/cpuinfo for older torch."""
    info = {}
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get('flags', '').split())
    return dict(cpu_name=info.get('model name'),
                **{flag: flag.replace('avx512_f', 'avx512f') in flags
                   for flag in ISA_FLAGS})


def cpu_isa() -> dict:
    """The CPU's name, PyTorch's kernel level
    (``torch.backends.cpu.get_cpu_capability()``), the instruction sets of
    ``ISA_FLAGS`` and the quantized engines this torch was built with."""
    get_capabilities = getattr(torch.cpu, 'get_capabilities', None)
    caps = get_capabilities() if get_capabilities else _proc_cpuinfo()
    return dict(
        cpu_name=caps.get('cpu_name'),
        capability=torch.backends.cpu.get_cpu_capability(),
        **{flag: bool(caps.get(flag, False)) for flag in ISA_FLAGS},
        quantized_engines=list(torch.backends.quantized.supported_engines))


def format_isa(isa: dict) -> str:
    """One line: ``CPU <name>: capability AVX512; has avx2 ...; lacks ...``."""
    has = [f for f in ISA_FLAGS if isa[f]]
    lacks = [f for f in ISA_FLAGS if not isa[f]]
    return (f"CPU {isa['cpu_name']}: torch capability {isa['capability']}; "
            f"has {' '.join(has) or '-'}; lacks {' '.join(lacks) or '-'}")


def synchronize(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one ``fn()`` takes (CUDA events on a GPU)."""
    if device.type == 'cuda':
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_rounds(groups: Dict[Hashable, Dict[str, Callable]],
                       rounds: int, warmup: int, device: torch.device,
                       log: Optional[Callable[[str], None]] = None
                       ) -> Dict[Hashable, Dict[str, List[float]]]:
    """Seconds per call of every row of every group, one sample per round.

    ``warmup`` calls of each row come first (they trigger
    ``torch.compile``); then every round times each row once, groups in
    order and rows within a group rotated by the round index.
    """
    for key, rows in groups.items():
        for name, fn in rows.items():
            start = time.perf_counter()
            for _ in range(warmup):
                fn()
            synchronize(device)
            if log:
                log(f'warm-up {key} {name}: '
                    f'{time.perf_counter() - start:.1f} s')
    samples = {key: {name: [] for name in rows}
               for key, rows in groups.items()}
    for r in range(rounds):
        for key, rows in groups.items():
            names = list(rows)
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                samples[key][name].append(time_call(rows[name], device))
        if log:
            log(f'round {r + 1}/{rounds} done')
    return samples


def spread(values: Sequence[float]) -> Dict[str, float]:
    return dict(median=statistics.median(values), min=min(values),
                max=max(values))


def paired_speed_ratio(seconds: Sequence[float],
                       base_seconds: Sequence[float]) -> Dict[str, float]:
    """Speed of a row relative to a base timed in the same rounds
    (base time / row time per round), median and range over rounds."""
    return spread([b / s for s, b in zip(seconds, base_seconds)])


class _LiveTensorBytes:
    """Peak bytes of live tensor storage on the CPU during a call.

    torch's own :class:`MemTracker` (a TorchDispatchMode) sees every
    tensor an op creates and holds a weak reference to its storage, so it
    knows the live bytes at each op; tensors that exist before the call
    (weights, optimizer state, inputs) are registered as external.
    """
    method = ('live tensor bytes traced by torch.distributed._tools.'
              'mem_tracker.MemTracker (a TorchDispatchMode), eager mode')

    @staticmethod
    def measure(fn, device, external):
        from torch.distributed._tools.mem_tracker import MemTracker
        tracker = MemTracker()
        tracker.track_external(*external)
        with tracker:
            fn()
        peak = tracker.get_tracker_snapshot('peak')
        return peak.get(device, {}).get('Total', 0)


def peak_memory(fn: Callable[[], object], device: torch.device,
                external: Sequence = ()) -> Tuple[Optional[int], str]:
    """(peak bytes of live tensors during ``fn()``, how it was measured).

    The peak counts everything alive at that moment (weights, optimizer
    state, inputs, activations), as ``torch.cuda.max_memory_allocated``
    does. ``external`` lists the modules, optimizers and tensors created
    before the call (needed on the CPU only). On the CPU before torch 2.5
    the bytes are None and the method says why.
    """
    if device.type == 'cuda':
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device),
                'torch.cuda.max_memory_allocated (caching allocator)')
    if device.type != 'cpu':
        raise ValueError(f'No peak-memory method for device {device}.')
    try:
        return (_LiveTensorBytes.measure(fn, device, external),
                _LiveTensorBytes.method)
    except ImportError:
        return None, ('not measured: CPU peak memory needs torch >= 2.5 '
                      '(torch.distributed._tools.mem_tracker.MemTracker), '
                      f'this is torch {torch.__version__}')


def vit_flops(tokens: int, dims: int, layers: int, hidden: int,
              patches: int, patch_pixels: int, classes: int) -> int:
    """Forward FLOPs per image of a ViT (2 per multiply-add; matmuls and
    the patch projection only, as fvcore and the papers count)."""
    per_layer = (
        tokens * dims * 3 * dims  # qkv
        + 2 * tokens * tokens * dims  # q @ k^T and attn @ v
        + tokens * dims * dims  # output projection
        + 2 * tokens * dims * hidden)  # MLP
    return 2 * (patches * patch_pixels * dims + layers * per_layer +
                dims * classes)


def format_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ['  '.join(str(c).rjust(w) for c, w in zip(r, widths))
             for r in [header, *rows]]
    return '\n'.join(lines)


def format_spread(s: Dict[str, float], digits: int = 2) -> str:
    """A :func:`spread` as ``median [min-max]``."""
    return (f"{s['median']:.{digits}f} "
            f"[{s['min']:.{digits}f}-{s['max']:.{digits}f}]")


def target_check(name: str, value: float, bound: float,
                 above: bool = True) -> dict:
    """A target next to its measured value; reported, never asserted."""
    return dict(target=name, value=value,
                bound=('>= ' if above else '<= ') + str(bound),
                passed=value >= bound if above else value <= bound)


def format_targets(checks: Sequence[dict]) -> str:
    lines = ['targets (measured, not asserted):']
    lines += [f"  {'PASS' if c['passed'] else 'FAIL'}  {c['target']}: "
              f"{c['value']:.3f} (target {c['bound']})" for c in checks]
    return '\n'.join(lines)
