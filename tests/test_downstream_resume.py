"""Detection and segmentation runs killed with SIGKILL after a checkpoint
resume with ``--resume`` to the planned end, on the same learning-rate
schedule as an uninterrupted run (the long runs are the ones that get
killed)."""
import sys

import pytest
from downstream import (DET_CONFIG, mask_rcnn_smoke_options,
                        upernet_fp32_config, upernet_smoke_options)
from test_distributed import kill_and_resume, load_checkpoint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures('one_thread', 'restore_determinism')
]

# 4 training images in batches of 2: 2 iterations an epoch.
RUNS = {
    'mask-rcnn': (lambda _: DET_CONFIG, mask_rcnn_smoke_options,
                  ('train_cfg.max_epochs=3',
                   'default_hooks.checkpoint.interval=1'), 'epoch_3.pth'),
    'upernet': (upernet_fp32_config, upernet_smoke_options,
                ('train_cfg.max_iters=6',
                 'default_hooks.checkpoint.interval=2'), 'iter_6.pth'),
}
PLANNED_ITERS = 6


@pytest.mark.parametrize('task', sorted(RUNS))
def test_killed_run_resumes_to_the_planned_end(task, make_runner, train_tool,
                                               repo_root, tmp_path):
    make_config, smoke_options, schedule, last_checkpoint = RUNS[task]
    config = make_config(tmp_path)
    options = (*smoke_options(tmp_path / 'data'), *schedule)
    killed_dir = tmp_path / 'killed'
    train_cmd = [sys.executable, repo_root / 'tools/train.py', config,
                 '--work-dir', killed_dir, '--cfg-options', *options]

    def train_reference():
        runner = make_runner(train_tool, config, tmp_path / 'reference',
                             options)
        runner.train()
        return runner

    reference, resumed_iter, after_resume = kill_and_resume(
        train_cmd, killed_dir, train_reference, timeout=600)

    assert 0 < resumed_iter < PLANNED_ITERS
    reference_lr = reference.message_hub.get_scalar('train/lr').data[0]
    assert sorted(after_resume) == list(
        range(resumed_iter + 1, PLANNED_ITERS + 1))
    assert after_resume == pytest.approx(
        {step: reference_lr[step - 1] for step in after_resume}, rel=1e-12)
    final = load_checkpoint(killed_dir / last_checkpoint)
    assert final['meta']['iter'] == PLANNED_ITERS
