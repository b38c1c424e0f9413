"""The generated CIFAR-100 files are read by mmpretrain's own CIFAR code."""
import numpy as np
import pytest
from mmpretrain.datasets import CIFAR100

from mmmpvg.datasets import GeneratedCIFAR100, make_cifar100


def test_generated_cifar100_loads_through_mmpretrain(tmp_path):
    make_cifar100(str(tmp_path), num_train=250, num_test=30)

    train = GeneratedCIFAR100(data_root=str(tmp_path), split='train',
                              pipeline=[])
    test = GeneratedCIFAR100(data_root=str(tmp_path), split='test',
                             pipeline=[])

    assert len(train) == 250 and len(test) == 30
    assert len(train.metainfo['classes']) == 100
    sample = train[137]
    assert sample['img'].shape == (32, 32, 3)
    assert sample['img'].dtype == np.uint8
    assert sample['gt_label'] == 37
    # Same class, same colour: the class is learnable.
    same = [train[i]['img'].mean((0, 1)) for i in (37, 137, 237)]
    assert np.abs(same[0] - same[1]).max() < 10
    assert np.abs(same[0] - same[2]).max() < 10


def test_the_real_loader_checks_the_release_checksums(tmp_path):
    make_cifar100(str(tmp_path), num_train=10, num_test=10)
    with pytest.raises(RuntimeError, match='Cannot find CIFAR100 dataset'):
        CIFAR100(data_root=str(tmp_path), split='train', download=False,
                 pipeline=[])
