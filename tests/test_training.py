"""Real training through mmpretrain's Runner on the digits data set: the
demo's micro ViT and a micro CeiT (BN in the stem and LeFF, the LCA, the
layer-wise PE all train)."""
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

import mmmpvg  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('one_thread')]

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Changes to the demo's backbone (a micro MPVG ViT).
BACKBONES = {
    'vit-mpvg': dict(pe_cfg=dict(method='mpvg'), global_pool='avg'),
    'vit-lape': dict(pe_cfg=dict(method='lape'), global_pool='cls'),
    'ceit-mpvg': dict(
        _delete_=True, type='PECeiT',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4,
                  feedforward_channels=128),
        img_size=32, patch_size=2, stem_channels=16, global_pool='avg',
        pe_cfg=dict(method='mpvg')),
}


def digits_cfg(backbone, work_dir, epochs=6):
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/demo/mpvg_vit-micro_digits.py'))
    cfg.merge_from_dict(dict(model=dict(backbone=backbone)))
    cfg.work_dir = str(work_dir)
    cfg.train_dataloader.batch_size = 32
    cfg.train_dataloader.dataset.num_samples = 640
    cfg.val_dataloader.dataset.num_samples = 128
    cfg.test_dataloader = cfg.val_dataloader
    cfg.param_scheduler = []  # constant lr: the loss trend is the signal
    cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=epochs)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = epochs
    cfg.log_level = 'WARNING'
    return cfg


# Measured here: mean loss of the first/last 20 iterations and test top-1
# (chance: 10 %): ViT MPVG 2.29 -> 1.07, 77 %; ViT LaPE 2.28 -> 1.00, 79 %;
# CeiT MPVG 1.82 -> 0.61, 92.2 % (66 s on the shared 2-core machine).
@pytest.mark.parametrize('backbone', BACKBONES)
def test_runner_training_learns_digits(backbone, tmp_path):
    runner = Runner.from_cfg(digits_cfg(BACKBONES[backbone], tmp_path))
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 120
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.3, losses
    assert runner.test()['accuracy/top1'] > 30.0


@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('max_epochs', [1, 2])
def test_demo_schedule_runs_for_any_max_epochs(
        max_epochs, make_runner, train_tool, demo_config,
        tiny_digits_options, tmp_path):
    """The demo warms up for 2 epochs, then follows a cosine to the end.
    With training that short the cosine would begin when training is over,
    which MMEngine refuses ("end should be larger than begin"); it is left
    out and training runs the warm-up: linear from 1 % of the lr over 2
    epochs of 4 iterations (MMEngine's LinearLR reaches the full lr at the
    last step before its end, step 7)."""
    runner = make_runner(train_tool, demo_config, tmp_path, (
        *tiny_digits_options, f'train_cfg.max_epochs={max_epochs}',
        f'train_cfg.val_interval={max_epochs}'))
    runner.train()
    lrs = runner.message_hub.get_scalar('train/lr').data[0]
    warmup = [2e-3 * (0.01 + 0.99 * step / 7) for step in range(8)]
    np.testing.assert_allclose(lrs, warmup[:4 * max_epochs], rtol=1e-6)
    assert runner.epoch == max_epochs
