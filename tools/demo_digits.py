"""Train and evaluate MPVG beside Default on scikit-learn's digits.

The embedded default job: three micro ViTs (configs/demo/) that differ only
in PE method and pooling, trained and tested through mmpretrain's Runner.

    python tools/demo_digits.py [--epochs 30] [--work-dir work_dirs/demo]
"""
import argparse
import os.path as osp

from mmengine.config import Config
from mmengine.runner import Runner

import mmmpvg  # noqa: F401  (safe checkpoint loading)

CONFIGS = {
    'Default (cls token)': 'configs/demo/default_vit-micro_digits.py',
    'Default (GAP)': 'configs/demo/default-gap_vit-micro_digits.py',
    'MPVG (GAP)': 'configs/demo/mpvg_vit-micro_digits.py',
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--epochs', type=int, default=30)
    parser.add_argument('--work-dir', default='work_dirs/demo_digits')
    return parser.parse_args()


def main():
    args = parse_args()
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    results = {}
    for name, config in CONFIGS.items():
        cfg = Config.fromfile(osp.join(repo, config))
        cfg.work_dir = osp.join(args.work_dir, osp.basename(config)[:-3])
        cfg.train_cfg.max_epochs = args.epochs
        cfg.train_cfg.val_interval = args.epochs
        runner = Runner.from_cfg(cfg)
        runner.train()
        results[name] = runner.test()['accuracy/top1']
    print('\nTop-1 on the digits test split (450 images):')
    for name, top1 in results.items():
        print(f'  {name:<20} {top1:6.2f} %')


if __name__ == '__main__':
    main()
