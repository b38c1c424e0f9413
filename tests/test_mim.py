"""`mim` finds our configs and tools and trains through them."""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MIM = osp.join(osp.dirname(sys.executable), 'mim')


def test_installed_package_exposes_configs_and_tools_to_mim():
    from mim.utils import get_installed_path
    mim_root = osp.join(get_installed_path('mmmpvg'), '.mim')
    for name in ('configs', 'tools', 'model-index.yml'):
        assert osp.realpath(osp.join(mim_root, name)) == osp.join(REPO, name)


def test_mim_train_runs_our_train_script(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(
        [MIM, 'train', 'mmmpvg', 'configs/demo/mpvg_vit-micro_digits.py',
         '--gpus', '0', '--work-dir', str(tmp_path), '--cfg-options',
         'train_cfg.max_epochs=3', 'train_cfg.val_interval=3',
         'train_dataloader.dataset.num_samples=64',
         'val_dataloader.dataset.num_samples=64'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout[-3000:]
                                    + result.stderr[-3000:])
    assert glob.glob(str(tmp_path / 'epoch_3.pth'))


def test_every_collection_links_the_paper():
    """What ``mim search mmmpvg --field paper`` lists, read as mim does."""
    from modelindex.load_model_index import load
    collections = load(osp.join(REPO, 'model-index.yml')).collections
    assert len(collections) == 7
    for collection in collections:
        assert collection.paper == {
            'Title': 'Maximizing the Position Embedding for Vision '
            'Transformers with Global Average Pooling (AAAI 2025)',
            'URL': 'https://doi.org/10.1609/aaai.v39i17.33997'}, (
                collection.name)
