"""scikit-learn's handwritten digits as an mmpretrain data set.

The 1,797 8x8 images ship inside scikit-learn, so demos and tests train on
real data without a download.
"""
import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS


@DATASETS.register_module()
class SklearnDigits(BaseDataset):
    """Digits 0-9, split reproducibly into train and test.

    Args:
        split (str): ``'train'`` or ``'test'``.
        test_fraction (float): Share of each class kept for ``'test'``.
        upscale (int): Integer nearest-neighbour upscaling of the 8x8 images
            (e.g. 4 gives 32x32), done once here instead of per iteration.
        num_samples (int, optional): Keep only the first samples of the split
            (quick runs); every class stays represented.
    """
    METAINFO = {'classes': tuple(str(i) for i in range(10))}

    def __init__(self, split='train', test_fraction=0.25, upscale=4,
                 num_samples=None, pipeline=(), **kwargs):
        if split not in ('train', 'test'):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.test_fraction = test_fraction
        self.upscale = upscale
        self.num_samples = num_samples
        super().__init__(
            ann_file='', data_root='', pipeline=pipeline, lazy_init=False,
            **kwargs)

    def load_data_list(self):
        from sklearn.datasets import load_digits
        digits = load_digits()
        # 0..16 ink levels -> uint8 RGB, as a decoded image file would be.
        images = (digits.images * (255 / 16)).round().astype(np.uint8)
        images = images.repeat(self.upscale, 1).repeat(self.upscale, 2)
        images = np.repeat(images[..., None], 3, axis=-1)
        order = np.random.default_rng(0).permutation(len(images))
        is_test = np.zeros(len(images), dtype=bool)
        for label in range(10):
            members = order[digits.target[order] == label]
            is_test[members[:round(len(members) * self.test_fraction)]] = True
        chosen = order[is_test[order] == (self.split == 'test')]
        if self.num_samples is not None:
            chosen = chosen[:self.num_samples]
        return [dict(img=images[i], gt_label=int(digits.target[i]))
                for i in chosen]
