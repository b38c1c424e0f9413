"""CIFAR-100 in its on-disk format (``cifar-100-python/{train,test,meta}``,
pickled dicts of uint8 rows), generated, so tests and demos run mmpretrain's
CIFAR loading code without the real data.

mmpretrain's ``CIFAR100`` checks the files against the MD5 sums of the real
release; :class:`GeneratedCIFAR100` is the same loader without that check,
for these files only. Real runs use ``CIFAR100``.
"""
import os
import os.path as osp
import pickle

import numpy as np
from mmpretrain.datasets import CIFAR100
from mmpretrain.registry import DATASETS

NUM_CLASSES = 100


def make_cifar100(root: str, num_train: int = 200, num_test: int = 100,
                  seed: int = 0) -> str:
    """Write a CIFAR-100-format data set under ``root``; return ``root``.

    Each class is a colour plus noise, so a model can learn it: labels are
    ``i % 100`` and the image's mean colour encodes the label.
    """
    rng = np.random.default_rng(seed)
    folder = osp.join(root, CIFAR100.base_folder)
    os.makedirs(folder, exist_ok=True)
    palette = rng.integers(0, 256, (NUM_CLASSES, 3))
    for split, count in (('train', num_train), ('test', num_test)):
        labels = [i % NUM_CLASSES for i in range(count)]
        images = palette[labels][:, :, None, None] + rng.normal(
            0, 24, (count, 3, 32, 32))
        rows = np.clip(images, 0, 255).astype(np.uint8).reshape(count, -1)
        with open(osp.join(folder, split), 'wb') as f:
            pickle.dump({'data': rows, 'fine_labels': labels,
                         'coarse_labels': [label // 5 for label in labels]},
                        f)
    with open(osp.join(folder, 'meta'), 'wb') as f:
        pickle.dump({'fine_label_names':
                     [f'class_{i:02d}' for i in range(NUM_CLASSES)]}, f)
    return root


@DATASETS.register_module()
class GeneratedCIFAR100(CIFAR100):
    """mmpretrain's ``CIFAR100`` for files written by :func:`make_cifar100`
    (no MD5 sums of the real release, no download)."""
    train_list = [['train', None]]
    test_list = [['test', None]]
    meta = dict(CIFAR100.meta, md5=None)

    def __init__(self, *args, **kwargs):
        kwargs['download'] = False
        super().__init__(*args, **kwargs)
