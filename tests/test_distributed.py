"""Distributed training and testing with real processes on CPU (gloo),
launched by tools/dist_train.sh and tools/dist_test.sh, and recovery of a
training run killed with SIGKILL."""
import json
import os
import pathlib
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from mmmpvg.engine import cpu_distributed_env, mmengine_checkpoint_globals

RANK_WEIGHTS_HOOK = '''\
"""Each rank saves the weights it holds before and after training."""
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpRankWeightsHook(Hook):

    def _dump(self, runner, stage):
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        torch.save(model.state_dict(),
                   f'{runner.work_dir}/rank{get_rank()}_{stage}.pth')

    def before_train(self, runner):
        self._dump(runner, 'before')

    def after_train(self, runner):
        self._dump(runner, 'after')
'''

DIST_CONFIG = '''\
_base_ = {base!r}
custom_imports = dict(
    imports=['mmmpvg.models', 'mmmpvg.datasets', 'rank_weights_dump'],
    allow_failed_imports=False)
custom_hooks = [dict(type='DumpRankWeightsHook')]
'''

NUM_TEST_SAMPLES = 101  # tiny_digits_options; odd, so 2 ranks pad one

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures('one_thread', 'restore_determinism')
]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tool_env(pythonpath=None):
    """Environment for the tools: this interpreter first on PATH (the shell
    scripts call ``python``), CPU only, a port nobody else uses."""
    env = dict(os.environ)
    env.update(
        PATH=f'{pathlib.Path(sys.executable).parent}:{env.get("PATH", "")}',
        CUDA_VISIBLE_DEVICES='',
        OMP_NUM_THREADS='1',
        PORT=str(free_port()))
    if pythonpath is not None:
        env['PYTHONPATH'] = str(pythonpath)
    return env


def run(cmd, env, timeout=300):
    result = subprocess.run([str(c) for c in cmd], env=env, timeout=timeout,
                            capture_output=True, text=True)
    assert result.returncode == 0, (
        f'{" ".join(map(str, cmd))} failed:\n{result.stdout[-3000:]}\n'
        f'{result.stderr[-3000:]}')
    return result


def run_logs(work_dir):
    """Log texts of the runs in ``work_dir``, oldest first."""
    return [p.read_text() for p in sorted(work_dir.glob('*/*.log'))]


def logged_lr(work_dir):
    """{iteration: lr} logged by the last run in ``work_dir``."""
    scalars = sorted(work_dir.glob('*/vis_data/scalars.json'))[-1]
    logged = [json.loads(line) for line in scalars.read_text().splitlines()]
    return {s['step']: s['lr'] for s in logged if 'lr' in s}


def load_checkpoint(path):
    with mmengine_checkpoint_globals():
        return torch.load(path, map_location='cpu')


def dist_config(root, demo_config):
    """The demo with a hook by which each rank saves its weights, in
    ``root`` (which must be on the tools' PYTHONPATH)."""
    (root / 'rank_weights_dump.py').write_text(RANK_WEIGHTS_HOOK)
    config = root / 'digits_dist.py'
    config.write_text(DIST_CONFIG.format(base=str(demo_config)))
    return config


def assert_two_ranks_trained_alike(work_dir, launcher):
    """Each rank saw different images; gradient all-reduce kept their
    weights equal (and equal to the checkpoint's), and they trained. The
    log shows the launcher and two processes."""
    weights = {(rank, stage): torch.load(
        work_dir / f'rank{rank}_{stage}.pth', weights_only=True)
        for rank in (0, 1) for stage in ('before', 'after')}
    saved = load_checkpoint(work_dir / 'epoch_3.pth')['state_dict']
    for name, value in weights[0, 'after'].items():
        assert torch.equal(value, weights[1, 'after'][name]), name
        assert torch.equal(value, saved[name]), name
    head = 'head.fc.weight'
    assert not torch.equal(weights[0, 'before'][head],
                           weights[0, 'after'][head])

    log, = run_logs(work_dir)
    assert f'Distributed launcher: {launcher}' in log
    assert 'GPU number: 2' in log  # MMEngine's name for the world size
    # 128 images / (2 ranks x 32 a batch) = 2 iterations an epoch.
    assert 'Epoch(train) [3][2/2]' in log


def assert_two_ranks_tested_every_sample_once(work_dir, launcher, top1):
    """The two-process test in ``work_dir`` predicted every test sample
    once (the padded one dropped) and logged the top-1 of those
    predictions, ``top1`` as one process gets; returns the predictions."""
    preds, count = predictions(work_dir / 'preds.pkl')
    assert count == NUM_TEST_SAMPLES
    assert sorted(preds) == list(range(NUM_TEST_SAMPLES))
    log, = run_logs(work_dir)
    assert f'Distributed launcher: {launcher}' in log
    assert 'GPU number: 2' in log
    logged = float(re.search(r'accuracy/top1: ([\d.]+)', log).group(1))
    correct = sum(pred == gt for pred, gt in preds.values())
    assert logged == pytest.approx(100 * correct / NUM_TEST_SAMPLES,
                                   abs=1e-4)
    assert logged == pytest.approx(top1, abs=1e-4)
    return preds


@pytest.fixture(scope='module')
def dist_train(tmp_path_factory, demo_config, tiny_digits_options,
               repo_root):
    """Two processes train the demo for 3 epochs on 128 images."""
    root = tmp_path_factory.mktemp('dist')
    work_dir = root / 'train'
    run(['bash', repo_root / 'tools/dist_train.sh',
         dist_config(root, demo_config), 2, '--work-dir', work_dir,
         '--cfg-options', *tiny_digits_options], tool_env(root))
    return work_dir


def test_both_ranks_hold_the_same_trained_weights_and_log_it(dist_train):
    assert_two_ranks_trained_alike(dist_train, 'pytorch')


def predictions(path):
    """{sample index: (predicted, true label)} and the number of entries."""
    with open(path, 'rb') as f:
        samples = pickle.load(f)
    return {s['sample_idx']: (int(s['pred_label']), int(s['gt_label']))
            for s in samples}, len(samples)


def test_dist_test_gathers_every_test_sample_once(
        dist_train, make_runner, test_tool, demo_config, tiny_digits_options,
        repo_root, tmp_path):
    checkpoint = dist_train / 'epoch_3.pth'
    one, two = tmp_path / 'one_process', tmp_path / 'two_processes'
    run(['bash', repo_root / 'tools/dist_test.sh', demo_config, checkpoint, 2,
         '--work-dir', two, '--out', two / 'preds.pkl', '--cfg-options',
         *tiny_digits_options], tool_env())
    metrics_one = make_runner(test_tool, demo_config, one,
                              tiny_digits_options, checkpoint, '--out',
                              one / 'preds.pkl').test()

    preds_one, count_one = predictions(one / 'preds.pkl')
    assert count_one == NUM_TEST_SAMPLES
    assert assert_two_ranks_tested_every_sample_once(
        two, 'pytorch', metrics_one['accuracy/top1']) == preds_one


def kill_after_first_checkpoint(process, work_dir, outcome, timeout=240):
    """SIGKILL ``process`` as soon as its first checkpoint is complete."""
    deadline = time.monotonic() + timeout
    while not (work_dir / 'last_checkpoint').exists():
        if process.poll() is not None or time.monotonic() > deadline:
            outcome['error'] = 'no checkpoint before training ended'
            process.kill()
            return
        time.sleep(0.02)
    if process.poll() is not None:
        outcome['error'] = 'training finished before the kill'
        return
    process.send_signal(signal.SIGKILL)
    process.wait()


def kill_and_resume(train_cmd, killed_dir, train_reference, timeout=300):
    """Run ``train_cmd``, SIGKILL it once its first checkpoint is complete
    while ``train_reference()`` trains the same uninterrupted in this
    process, then run it again with ``--resume``.

    Returns:
        The reference runner, the iteration the second run resumed at and
        the lr it logged per iteration.
    """
    victim = subprocess.Popen([str(c) for c in train_cmd], env=tool_env(),
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    outcome = {}
    killer = threading.Thread(target=kill_after_first_checkpoint,
                              args=(victim, killed_dir, outcome, timeout))
    killer.start()
    reference = train_reference()
    killer.join()
    assert 'error' not in outcome, outcome.get('error')
    assert victim.returncode == -signal.SIGKILL

    run([*train_cmd, '--resume'], tool_env(), timeout=timeout)

    resumed = re.search(r'resumed epoch: (\d+), iter: (\d+)',
                        run_logs(killed_dir)[-1])
    assert resumed, 'the second run did not resume'
    return reference, int(resumed.group(2)), logged_lr(killed_dir)


def test_training_killed_by_sigkill_resumes_to_the_planned_end(
        make_runner, train_tool, demo_config, tiny_digits_options, repo_root,
        tmp_path):
    # 256 images / 32 a batch = 8 iterations an epoch, 24 planned.
    options = (*tiny_digits_options,
               'train_dataloader.dataset.num_samples=256')
    killed_dir = tmp_path / 'killed'
    train_cmd = [sys.executable, repo_root / 'tools/train.py', demo_config,
                 '--work-dir', killed_dir, '--cfg-options', *options]

    def train_reference():
        runner = make_runner(train_tool, demo_config,
                             tmp_path / 'reference', options)
        runner.train()
        return runner

    reference, resumed_iter, after_resume = kill_and_resume(
        train_cmd, killed_dir, train_reference)

    assert resumed_iter % 8 == 0 and 8 <= resumed_iter < 24
    reference_lr = reference.message_hub.get_scalar('train/lr').data[0]
    assert sorted(after_resume) == list(range(resumed_iter + 1, 25))
    assert after_resume == {step: reference_lr[step - 1]
                            for step in after_resume}

    final = load_checkpoint(killed_dir / 'epoch_3.pth')
    assert final['meta']['iter'] == 24
    assert all(s['step'] == 24 for s in final['optimizer']['state'].values())


@pytest.mark.parametrize('launcher, env', [
    ('slurm', dict(SLURM_PROCID='3', SLURM_LOCALID='1', SLURM_NTASKS='4',
                   SLURM_NODELIST='node[1-2]')),
    ('mpi', dict(OMPI_COMM_WORLD_RANK='3', OMPI_COMM_WORLD_LOCAL_RANK='1',
                 OMPI_COMM_WORLD_SIZE='4')),
])
def test_slurm_and_mpi_ranks_reach_the_gloo_process_group(
        launcher, env, monkeypatch):
    monkeypatch.delenv('MASTER_PORT', raising=False)
    monkeypatch.setenv('MASTER_ADDR', '10.0.0.1')
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cpu_distributed_env(launcher) == dict(
        RANK='3', LOCAL_RANK='1', WORLD_SIZE='4', MASTER_PORT='29500')
