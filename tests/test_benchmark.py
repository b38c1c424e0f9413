"""tools/benchmark.py end to end at tiny sizes, and the measurements it
relies on (peak memory, FLOP count). Nothing here asserts a time."""
import json
import statistics

import pytest
import torch

from mmmpvg.utils.benchmarking import peak_memory, vit_flops

pytestmark = pytest.mark.slow

MiB = 2**20
try:
    from torch.distributed._tools.mem_tracker import MemTracker  # noqa: F401
    HAS_MEM_TRACKER = True
except ImportError:  # torch < 2.5: CPU peak memory is not measured
    HAS_MEM_TRACKER = False
needs_mem_tracker = pytest.mark.skipif(
    not HAS_MEM_TRACKER, reason='CPU peak memory needs torch >= 2.5')


@pytest.fixture(scope='module')
def tiny_run(benchmark_tool, tmp_path_factory):
    path = tmp_path_factory.mktemp('bench') / 'out.json'
    benchmark_tool.main(['--batch-size', '2', '--img-size', '32', '--rounds',
                         '2', '--warmup', '1', '--device', 'cpu', '--int8',
                         'dynamic', 'onnxruntime', '--json', str(path)])
    return json.loads(path.read_text())


def test_every_row_mode_and_precision_measured(benchmark_tool, tiny_run):
    measured = {(r['row'], r['mode'], r['precision'], r['compiled'])
                for r in tiny_run['rows']}
    expected = {(row, mode, precision, False)
                for row in benchmark_tool.ROWS for mode in benchmark_tool.MODES
                for precision in ('fp32', 'bf16')}
    # int8 inference for our rows only
    expected |= {(row, 'inference', f'int8-{scheme}', False)
                 for row, (library, _, _) in benchmark_tool.ROWS.items()
                 if library == 'ours' for scheme in ('dynamic', 'onnxruntime')}
    assert measured == expected
    assert len(tiny_run['rows']) == len(expected)
    for r in tiny_run['rows']:
        assert len(r['seconds_per_round']) == 2
        assert r['images_per_s']['min'] > 0
        int8 = r['precision'].startswith('int8')
        assert (r['gemm_fraction'] is None) == int8
        if int8 or not HAS_MEM_TRACKER:
            assert r['peak_memory_bytes'] is None
        else:
            assert r['peak_memory_bytes'] > 0
    for precision in ('fp32', 'bf16'):
        assert tiny_run['gemm'][precision]['flops_per_s'] > 0


def test_ratios_are_paired_per_round(tiny_run):
    rows = {(r['row'], r['mode'], r['precision']): r
            for r in tiny_run['rows']}
    for (name, mode, precision), r in rows.items():
        for base in ('default-cls', 'default-gap', 'timm', 'mmpretrain'):
            if (base, mode, precision) not in rows:  # timm has no int8 row
                assert f'ratio_to_{base}' not in r
                continue
            base_seconds = rows[base, mode, precision]['seconds_per_round']
            expected = [b / s for s, b in zip(r['seconds_per_round'],
                                              base_seconds)]
            ratio = r[f'ratio_to_{base}']
            assert ratio['median'] == pytest.approx(
                statistics.median(expected))
            assert ratio['min'] == pytest.approx(min(expected))
            if name == base:
                assert ratio == dict(median=1.0, min=1.0, max=1.0)


def test_inference_rows_paired_with_timm_fp32_eager(tiny_run):
    timm = next(r for r in tiny_run['rows'] if r['row'] == 'timm' and
                r['mode'] == 'inference' and r['precision'] == 'fp32')
    for r in tiny_run['rows']:
        if r['mode'] != 'inference':
            assert 'ratio_to_timm_fp32_eager' not in r
            continue
        expected = [b / s for s, b in zip(r['seconds_per_round'],
                                          timm['seconds_per_round'])]
        assert r['ratio_to_timm_fp32_eager']['median'] == pytest.approx(
            statistics.median(expected))


def test_cpu_instruction_sets_in_the_json(tiny_run):
    isa = tiny_run['machine']['isa']
    assert isa['capability'] == torch.backends.cpu.get_cpu_capability()
    caps = torch.cpu.get_capabilities()
    for flag in ('avx2', 'avx512_vnni', 'avx512_bf16', 'amx_tile'):
        assert isa[flag] == caps[flag]


def test_targets_reported_with_verdicts(tiny_run):
    targets = tiny_run['targets']
    names = ' '.join(t['target'] for t in targets)
    for part in ('mpvg / default-gap speed', 'default-cls / timm speed',
                 'default-cls / mmpretrain speed', 'best mpvg CPU inference',
                 'mpvg / default-gap peak train memory'):
        assert (part in names) == (HAS_MEM_TRACKER or 'memory' not in part)
    for t in targets:
        op, bound = t['bound'].split()
        assert t['passed'] == (t['value'] >= float(bound) if op == '>='
                               else t['value'] <= float(bound))


@needs_mem_tracker
def test_cpu_peak_memory_resolves_an_8_mib_tensor():
    held = torch.zeros(MiB // 4)  # 1 MiB alive before the call

    def work(extra):
        a = torch.ones(256, 1024)  # 1 MiB
        b = a * 2  # 1 MiB
        if extra:
            torch.empty(2 * MiB).fill_(1)  # 8 MiB while a, b live
        return b

    base, method = peak_memory(lambda: work(False), torch.device('cpu'),
                               (held, ))
    more, _ = peak_memory(lambda: work(True), torch.device('cpu'), (held, ))
    assert 'MemTracker' in method
    assert abs(base - 3 * MiB) < 0.1 * MiB
    assert abs(more - base - 8 * MiB) < MiB


@pytest.mark.skipif(HAS_MEM_TRACKER, reason='torch >= 2.5 measures it')
def test_cpu_peak_memory_without_mem_tracker_says_why():
    peak, method = peak_memory(lambda: torch.ones(4), torch.device('cpu'))
    assert peak is None
    assert method.startswith('not measured: CPU peak memory needs torch >= '
                             '2.5 (torch.distributed._tools.mem_tracker.'
                             'MemTracker), this is torch ')


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_peak_memory_resolves_an_8_mib_tensor():
    device = torch.device('cuda')

    def work(extra):
        a = torch.ones(256, 1024, device=device)
        if extra:
            torch.empty(2 * MiB, device=device).fill_(1)
        return a * 2

    base, _ = peak_memory(lambda: work(False), device)
    more, _ = peak_memory(lambda: work(True), device)
    assert abs(more - base - 8 * MiB) < MiB


def test_analytic_flops_match_fvcore_matmul_count(benchmark_tool):
    """vit_flops counts 2 FLOPs per multiply-add of every matmul and the
    patch projection; fvcore counts 1 per multiply-add, op by op."""
    fvcore = pytest.importorskip('fvcore.nn')
    args = benchmark_tool.parse_args(['--img-size', '64', '--device', 'cpu'])
    model = benchmark_tool.build_model('timm', args).eval()
    for block in model.blocks:  # explicit q @ k, attn @ v matmuls
        block.attn.fused_attn = False
    counter = fvcore.FlopCountAnalysis(model, torch.zeros(1, 3, 64, 64))
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = counter.by_operator()
    macs = sum(by_op.get(op, 0) for op in ('conv', 'linear', 'addmm',
                                           'matmul', 'bmm'))
    assert 2 * macs == benchmark_tool.model_flops('timm', args) == vit_flops(
        17, 192, 12, 768, 16, 768, 1000)


def test_adapter_benchmark_end_to_end(tmp_path, benchmark_adapter_tool):
    tool = benchmark_adapter_tool
    path = tmp_path / 'adapter.json'
    tool.main(['--img-size', '64', '--batch-size', '1', '--rounds', '1',
               '--modes', 'train', '--no-memory', '--device', 'cpu',
               '--json', str(path)])
    result = json.loads(path.read_text())
    assert [r['method'] for r in result['rows']] == list(tool.METHODS)
    for r in result['rows']:
        assert r['images_per_s']['min'] > 0
    assert result['rows'][0]['ratio_to_default'] == dict(
        median=1.0, min=1.0, max=1.0)
    assert [r['backend'] for r in result['msda']] == ['pytorch']
    assert result['msda_compiled_op'].startswith('absent on cpu')
