"""A small generated stand-in for ``data/``: every data set the configs in
``configs/`` read, each in its real on-disk layout, so that any config runs
a few iterations without the real data (``tools/train.py CONFIG --smoke``).

- ``imagenet/``: ``train/<wnid>/*.JPEG``, ``val/*.JPEG`` and
  ``meta/{train,val}.txt`` (ImageNet-1K);
- ``cifar100/``: the ``cifar-100-python/{train,test,meta}`` pickles;
- ``coco/``: ``{train,val}2017/*.jpg`` and
  ``annotations/instances_{train,val}2017.json`` with polygon and RLE
  masks and COCO's 80 categories;
- ``ade/ADEChallengeData2016/``: ``images/{training,validation}/*.jpg``
  and their ``annotations/.../*.png`` label maps;
- ``shapes_coco/``, ``shapes_ade20k/``: the layouts of
  ``tools/make_shapes_data.py`` (the shapes demo configs).

The images are noise with coloured shapes (COCO, ADE20K) or a colour per
class (ImageNet, CIFAR-100): enough for the loaders, the pipelines and a
loss, not for learning anything.
"""
import os
import os.path as osp

import numpy as np
from PIL import Image

from .cifar_format import make_cifar100
from .shapes import make_ade20k_shapes, make_coco_shapes

__all__ = ['SMOKE_DATA_LAYOUTS', 'write_smoke_data']

SMOKE_DATA_LAYOUTS = ('imagenet', 'cifar100', 'coco',
                      'ade/ADEChallengeData2016', 'shapes_coco',
                      'shapes_ade20k')
# COCO 2017's category ids: 1-90 with ten never used.
_COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
_IMAGENET_NUM_CLASSES = 1000


def _coco_categories():
    from mmdet.datasets import CocoDataset
    ids = [i for i in range(1, 91) if i not in _COCO_UNUSED_IDS]
    return [dict(id=i, name=name)
            for i, name in zip(ids, CocoDataset.METAINFO['classes'])]


def _write_imagenet(root, num_train, num_val, rng, size=(48, 64)):
    """ImageNet-1K's folders and meta files, with labels spread over the
    1000 classes; a train image's folder is its class's (made-up) wnid."""
    lines = dict(train=[], val=[])
    for split, count in (('train', num_train), ('val', num_val)):
        for index in range(count):
            label = index * _IMAGENET_NUM_CLASSES // max(count, 1)
            if split == 'train':
                wnid = f'n{label:08d}'
                path = f'{wnid}/{wnid}_{index}.JPEG'
            else:
                path = f'ILSVRC2012_val_{index + 1:08d}.JPEG'
            colour = rng.integers(0, 256, 3)
            pixels = np.clip(colour + rng.normal(0, 24, (*size, 3)), 0, 255)
            os.makedirs(osp.dirname(osp.join(root, split, path)),
                        exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(
                osp.join(root, split, path), format='JPEG')
            lines[split].append(f'{path} {label}')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, split_lines in lines.items():
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(split_lines) + '\n')


def write_smoke_data(root: str, num_train: int = 4, num_val: int = 2,
                     seed: int = 0) -> dict:
    """Write every layout of :data:`SMOKE_DATA_LAYOUTS` under ``root``.

    ``num_train`` images go in each training split and ``num_val`` in each
    validation/test split. The COCO layout needs mmdet (its class names);
    without mmdet it is left out, as are the configs that read it.

    Returns:
        dict: ``{layout: path}`` of what was written.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got '
                         f'{num_train} and {num_val}')
    rng = np.random.default_rng(seed)
    written = {}

    def path(layout):
        written[layout] = osp.join(root, layout)
        return written[layout]

    _write_imagenet(path('imagenet'), num_train, num_val, rng)
    make_cifar100(path('cifar100'), num_train, num_val, seed=seed)
    try:
        categories = _coco_categories()
    except ImportError:
        categories = None
    if categories is not None:
        make_coco_shapes(
            path('coco'), (('train2017', num_train), ('val2017', num_val)),
            size=(120, 160), seed=seed, categories=categories,
            ann_file_prefix='instances_')
    make_ade20k_shapes(
        path('ade/ADEChallengeData2016'),
        (('training', num_train), ('validation', num_val)), seed=seed)
    make_coco_shapes(path('shapes_coco'),
                     (('train', num_train), ('val', num_val)), size=(64, 64),
                     seed=seed)
    make_ade20k_shapes(path('shapes_ade20k'),
                       (('training', num_train), ('validation', num_val)),
                       seed=seed)
    return written
