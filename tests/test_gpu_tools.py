"""The cheap parts of the GPU tooling, on the CPU: the torch-compat script's
argument errors, the offline bundle's checks on fake bundles, and what
tools/gpu_check.sh would run (``--dry-run``) and how it judges a step."""
import json
import os
import shlex
import subprocess
import sys
import zipfile

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bash(script, *args, env=None):
    return subprocess.run(
        ['bash', os.path.join(REPO, 'tools', script), *args],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, **(env or {})))


@pytest.mark.slow
@pytest.mark.parametrize('args,message', [
    ((), 'usage: '),
    (('--help', ), 'usage: '),
    (('2.1', ), "TORCH_VERSION '2.1': give a torch release as X.Y.Z"),
    (('1.13.1', ), "TORCH_VERSION '1.13.1': give a torch release"),
    (('2.0.1', ), 'torch 2.0.1: this project is checked with torch >= 2.1'),
    (('2.1.2', 'python3.99-absent'), "no interpreter 'python3.99-absent'"),
    (('2.1.2', sys.executable, 'tests'), 'usage: '),
])
def test_compat_script_rejects_bad_arguments_before_any_set_up(
        tmp_path, args, message):
    venvs = tmp_path / 'venvs'
    result = bash('check_torch_compat.sh', *args,
                  env=dict(MMMPVG_COMPAT_VENVS=str(venvs)))
    assert result.returncode == 2
    assert message in result.stderr
    assert not venvs.exists()


@pytest.mark.slow
def test_setup_rejects_a_malformed_torch_version_before_the_venv(tmp_path):
    result = bash('setup_env.sh', env=dict(VENV=str(tmp_path / 'venv'),
                                           TORCH_VERSION='2.11'))
    assert result.returncode == 1
    assert 'TORCH_VERSION=2.11: give a torch 2 release as X.Y.Z' in \
        result.stderr
    assert not (tmp_path / 'venv').exists()


def fake_wheel(folder, filename, members=(), size=0):
    """A zip named like a wheel; ``size`` bytes of stored padding."""
    with zipfile.ZipFile(folder / filename, 'w') as archive:
        for name, data in members:
            archive.writestr(name, data)
        if size:
            archive.writestr('padding', os.urandom(size),
                             compress_type=zipfile.ZIP_STORED)


def fake_bundle(folder, cuda=True):
    folder.mkdir()
    symbol = b'..ms_deform_attn_cuda_forward..' if cuda else b'..nms..'
    fake_wheel(folder, 'mmcv-2.1.0-cp312-cp312-linux_x86_64.whl',
               [('mmcv/__init__.py', ''),
                ('mmcv/_ext.cpython-312-x86_64-linux-gnu.so', symbol)],
               size=2**20)
    for name in ('mmengine-0.10.7', 'mmdet-3.3.0', 'mmsegmentation-1.2.2',
                 'mmpretrain-1.2.0', 'mmmpvg-0.1.0', 'addict-2.4.0'):
        fake_wheel(folder, f'{name}-py3-none-any.whl', [('x.py', '')])
    return folder


def test_bundle_check_accepts_a_complete_bundle_within_the_limit(
        tmp_path, gpu_bundle_tool):
    folder = fake_bundle(tmp_path / 'bundle')
    result = gpu_bundle_tool.check(str(folder), limit_mib=1.1)
    assert result['problems'] == []
    assert len(result['sizes']) == 7
    assert result['total_bytes'] == sum(
        f.stat().st_size for f in folder.iterdir())
    assert 2**20 < result['total_bytes'] < 1.1 * 2**20


def test_bundle_check_names_each_problem(tmp_path, gpu_bundle_tool):
    folder = fake_bundle(tmp_path / 'bundle', cuda=False)
    (folder / 'mmmpvg-0.1.0-py3-none-any.whl').unlink()
    fake_wheel(folder, 'mmengine-0.10.6-py3-none-any.whl')
    (folder / 'terminaltables-3.1.10.tar.gz').write_bytes(b'sdist')
    problems = gpu_bundle_tool.check(str(folder), limit_mib=1)['problems']
    assert len(problems) == 5
    assert problems[0].startswith('terminaltables-3.1.10.tar.gz: not a wheel')
    assert problems[1].startswith('mmengine: 2 wheels')
    assert problems[2] == 'mmmpvg: no wheel'
    assert problems[3] == ('mmcv-2.1.0-cp312-cp312-linux_x86_64.whl: built '
                           'without CUDA ops (no ms_deform_attn_cuda_forward '
                           'in mmcv/_ext)')
    assert problems[4].endswith('MiB in all, over the 1 MiB limit')


def test_bundle_check_command_exits_non_zero_on_a_problem(
        tmp_path, gpu_bundle_tool, capsys):
    folder = fake_bundle(tmp_path / 'bundle')
    assert gpu_bundle_tool.main(['check', str(folder)]) == 0
    assert gpu_bundle_tool.main(
        ['check', str(folder), '--limit-mib', '0.5']) == 1
    assert 'over the 0.5 MiB limit' in capsys.readouterr().err


def test_bundle_missing_lists_what_pip_would_add_and_the_bundle_lacks(
        tmp_path, gpu_bundle_tool):
    folder = fake_bundle(tmp_path / 'bundle')
    report = {'install': [
        {'metadata': {'name': name, 'version': version}}
        for name, version in [('mmcv', '2.1.0'), ('yapf', '0.43.0'),
                              ('Terminaltables', '3.1.10'),
                              ('model_index', '0.1.11')]]}
    assert gpu_bundle_tool.missing(report, str(folder)) == [
        'Terminaltables==3.1.10', 'model_index==0.1.11', 'yapf==0.43.0']


def test_gpu_check_dry_run_lists_repository_commands_within_8_minutes(
        tmp_path, gpu_check_tool, capsys):
    assert gpu_check_tool.main(['--dry-run', '--out-dir',
                                str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    steps = gpu_check_tool.plan(str(tmp_path))
    assert len(lines) == 2 * len(steps) + 1 and len(steps) == 10
    assert sum(s.timeout_s for s in steps) <= 8 * 60
    for step, comment, command in zip(steps, lines[::2], lines[1::2]):
        assert comment.startswith(f'# {step.name} (limit ')
        argv = shlex.split(command)
        assert argv[0] == sys.executable
        # Every script, config and test folder it names is in the repo.
        for arg in argv[1:]:
            if arg.startswith(REPO):
                assert os.path.exists(arg), arg
    assert lines[-1].startswith('# 10 steps, at most ')


def test_gpu_check_steps_take_what_they_need(tmp_path, gpu_check_tool,
                                             capsys):
    gpu_check_tool.main(['--dry-run', '--out-dir', str(tmp_path), '--steps',
                         'test-amp', 'train-upernet'])
    names = [line.split()[1] for line in capsys.readouterr().out.splitlines()
             if line.startswith('# ') and '(limit' in line]
    assert names == ['data-ade20k', 'train-upernet', 'train-digits',
                     'test-amp']
    with pytest.raises(SystemExit):
        gpu_check_tool.parse_args(['--steps', 'train'])
    assert 'unknown step(s) train; the steps: cuda-tests,' in \
        capsys.readouterr().err


def test_gpu_check_command_lines_parse_in_their_tools(
        tmp_path, gpu_check_tool, train_tool, test_tool, benchmark_tool,
        benchmark_adapter_tool, monkeypatch):
    """Each tool accepts its step's arguments (CUDA made visible to the
    parsers only)."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    tools = {'train.py': train_tool, 'test.py': test_tool,
             'benchmark.py': benchmark_tool,
             'benchmark_adapter.py': benchmark_adapter_tool}
    parsed = 0
    for step in gpu_check_tool.plan(str(tmp_path)):
        name = os.path.basename(step.argv[1])
        if name in tools:
            args = tools[name].parse_args(step.argv[2:])
            parsed += 1
            if name.startswith('benchmark'):
                assert args.device == torch.device('cuda')
    assert parsed == 7


@pytest.mark.parametrize('tool', ['benchmark_tool', 'benchmark_adapter_tool'])
def test_benchmarks_refuse_cuda_without_a_gpu(tool, request, monkeypatch,
                                              capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(SystemExit):
        request.getfixturevalue(tool).parse_args(['--device', 'cuda'])
    assert '--device cuda: torch ' in capsys.readouterr().err


def test_gpu_check_without_a_gpu_fails_at_once(tmp_path, gpu_check_tool,
                                               monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert gpu_check_tool.main(['--out-dir', str(tmp_path / 'out')]) == 1
    assert 'sees no CUDA GPU' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_junit_report_skips_are_failures(tmp_path, gpu_check_tool):
    report = tmp_path / 'r.xml'
    report.write_text(
        '<testsuites><testsuite tests="2" skipped="1">'
        '<testcase name="test_a"/><testcase name="test_b">'
        '<skipped message="needs CUDA"/></testcase></testsuite></testsuites>')
    assert gpu_check_tool.junit_problem(str(report)) == \
        'skipped on the GPU: test_b: needs CUDA'
    report.write_text('<testsuites><testsuite tests="0"/></testsuites>')
    assert gpu_check_tool.junit_problem(str(report)) == \
        'no CUDA test was collected'
    assert gpu_check_tool.junit_problem(str(tmp_path / 'none.xml')) == \
        f"no JUnit report at {tmp_path / 'none.xml'}"


@pytest.mark.slow
def test_gpu_check_judges_exit_codes_time_limits_checks_and_needs(
        tmp_path, gpu_check_tool):
    Step = gpu_check_tool.Step
    python = [sys.executable, '-c']
    steps = [
        Step('ok', 'exits 0', python + ['open("made.json", "w").write('
                                        '\'{"k": 1}\')'], 20,
             verify=lambda o: gpu_check_tool.json_problem(
                 os.path.join(o, 'made.json'), 'k', 2)),
        Step('exit3', 'exits 3', python + ['raise SystemExit(3)'], 20),
        Step('slow', 'sleeps', python + ['import time; time.sleep(30)'], 1),
        Step('after', 'needs exit3', python + ['pass'], 20, needs='exit3'),
    ]
    failed, results = [], []
    for step in steps:
        results.append(gpu_check_tool.run_step(step, str(tmp_path), failed))
        if results[-1]['status'] != 'passed':
            failed.append(step.name)
    assert [(r['status'], r['problem']) for r in results] == [
        ('failed', 'k is 1'),
        ('failed', f"exit code 3; see {tmp_path / 'exit3.log'}"),
        ('failed', 'timed out after 1 s'),
        ('not run', 'needs exit3, which failed')]
    summary = dict(environment=dict(
        date='2026-01-01T00:00:00', gpu='NVIDIA H200', capability='9.0',
        torch='2.11.0+cu130', torch_cuda='13.0', mmcv='2.1.0',
        mmcv_cuda_ops='13.0', python='3.12.3'), result='failed',
        seconds=3.0, steps=results)
    table = gpu_check_tool.markdown(summary).splitlines()
    assert table[2] == ('NVIDIA H200 (sm_90), torch 2.11.0+cu130 (CUDA '
                        '13.0), mmcv 2.1.0 (CUDA ops: 13.0), Python 3.12.3: '
                        '**failed** in 3 s')
    assert table[6].startswith('| ok | failed | ')
    assert len(table) == 10
    json.dumps(summary)  # the summary.json content serialises


@pytest.mark.slow
def test_gpu_check_script_dry_run(tmp_path):
    result = bash('gpu_check.sh', '--dry-run', '--out-dir', str(tmp_path),
                  env=dict(PYTHON=sys.executable))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 21
    assert lines[1].endswith(f"--junitxml={tmp_path / 'cuda_tests.xml'}")
