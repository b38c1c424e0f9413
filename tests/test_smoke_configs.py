"""Every config in configs/ runs with ``--smoke`` on the generated data of
tools/make_smoke_data.py: tools/train.py builds it and trains one iteration
at its own recipe, saves a checkpoint, and tools/test.py loads that
checkpoint (every weight) and evaluates it with the config's metric. Plus
what ``--smoke`` changes in a config, checked on the paper's detection and
segmentation recipes."""
import ctypes
import ctypes.util
import functools
import gc
import math
import pathlib
import uuid

import mmengine.config.config as mmengine_config
import mmengine.config.utils as mmengine_config_utils
import pytest
from mmengine.config import Config

from mmmpvg.datasets.smoke import write_smoke_data
from mmmpvg.engine.smoke import SMOKE_MAX_SIDE, apply_smoke

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(REPO).as_posix()
                 for p in (REPO / 'configs').rglob('*.py')
                 if '_base_' not in p.parts)
DET = REPO / ('configs/vit_adapter/mask-rcnn_vit-adapter-ti-mpvg_fpn_'
              '4xb2-ms-3x_coco.py')
SEG = REPO / ('configs/vit_adapter/upernet_vit-adapter-ti-mpvg_'
              '4xb2-160k_ade20k-512x512.py')
# The first metric each evaluator reports.
METRIC_KEYS = {'Accuracy': 'accuracy/top1', 'CocoMetric': 'coco/segm_mAP',
               'IoUMetric': 'mIoU'}


@pytest.fixture(scope='session')
def smoke_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('smoke_data')
    write_smoke_data(str(root))
    return root


@pytest.fixture(scope='module')
def quick_config_handling():
    """Two MMEngine costs that are no part of what is tested, a third of
    the time otherwise: yapf formats the config text five times a run
    (logged, dumped, stored in the checkpoint), and every ``mmdet::`` or
    ``mmpretrain::`` config is looked up by reading all of the package's
    metafiles again (read once here)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mmengine_config, 'FormatCode',
                      lambda text, style_config=None: (text, None))
        patch.setattr(mmengine_config_utils, 'load',
                      functools.lru_cache(None)(mmengine_config_utils.load))
        yield


@pytest.fixture
def release_freed_memory():
    """glibc keeps the heap a run frees for the process: 62 runs grew it to
    6.6 GB (peak RSS), though no model outlived its test. Hand it back to
    the system after each run (the largest, DeiT-B, peaks at 2.9 GB)."""
    yield
    gc.collect()
    libc = ctypes.CDLL(ctypes.util.find_library('c'))
    if hasattr(libc, 'malloc_trim'):
        libc.malloc_trim(0)


@pytest.mark.slow
@pytest.mark.usefixtures('one_thread', 'quick_config_handling',
                         'release_freed_memory')
@pytest.mark.parametrize('config', CONFIGS)
def test_config_trains_and_tests_with_smoke(config, smoke_data, tmp_path,
                                            make_runner, train_tool,
                                            test_tool):
    smoke = ('--smoke', '--smoke-data', smoke_data, '--smoke-iters', '1')
    # The visualizers of mmdet and mmseg are named instances: one per run.
    # A seed: the untrained models' outputs (how many detections) repeat.
    common = [f'visualizer.name=smoke-{uuid.uuid4().hex}', 'randomness.seed=0']
    # The test pass below evaluates; validating here too would only
    # repeat it.
    trainer = make_runner(train_tool, REPO / config, tmp_path / 'train', [
        *common, 'val_dataloader=None', 'val_cfg=None',
        'val_evaluator=None'], *smoke)
    trainer.train()
    assert trainer.iter == 1
    assert math.isfinite(
        trainer.message_hub.get_scalar('train/loss').current())
    (checkpoint, ) = (tmp_path / 'train').glob('*.pth')

    tester = make_runner(test_tool, REPO / config, tmp_path / 'test', [
        *common, 'test_dataloader.batch_size=1',
        'test_dataloader.dataset.indices=1'], checkpoint, *smoke)
    metrics = tester.test()
    evaluator = tester.cfg.test_evaluator
    kinds = [e['type'] for e in evaluator] if isinstance(
        evaluator, list) else [evaluator['type']]
    for kind in kinds:
        assert METRIC_KEYS[kind] in metrics, (kind, metrics)


@pytest.fixture
def smoke_cfg(smoke_data):
    def load(path):
        cfg = Config.fromfile(path)
        factor = apply_smoke(cfg, str(smoke_data), 'name')
        return cfg, factor

    return load


def test_smoke_scales_mask_rcnn_to_128_pixels(smoke_cfg, smoke_data):
    cfg, factor = smoke_cfg(DET)
    assert SMOKE_MAX_SIDE == 128
    assert factor == 128 / 1333
    multi_scale = cfg.train_dataloader.dataset.pipeline[3].transforms
    assert multi_scale[0][0].scales == [
        (46, 128), (49, 128), (52, 128), (55, 128), (58, 128), (61, 128),
        (65, 128), (68, 128), (71, 128), (74, 128), (77, 128)]
    assert multi_scale[1][0].scales == [(38, 128), (48, 128), (58, 128)]
    assert multi_scale[1][1].crop_size == (37, 58)
    assert cfg.train_dataloader.dataset.pipeline[4].crop_size == (98, 98)
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (128, 77)
    assert cfg.test_evaluator.ann_file == str(
        smoke_data / 'coco/annotations/instances_val2017.json')
    assert cfg.train_dataloader.dataset.data_root == str(smoke_data / 'coco')
    # What stays the recipe's: the model, optimizer and schedule.
    recipe = Config.fromfile(DET)
    assert cfg.model.backbone.init_cfg is None  # no DeiT checkpoint here
    recipe.model.backbone.init_cfg = None
    assert cfg.model == recipe.model
    assert cfg.optim_wrapper == recipe.optim_wrapper
    assert cfg.param_scheduler == recipe.param_scheduler
    assert cfg.train_cfg == dict(recipe.train_cfg, max_epochs=2,
                                 val_interval=2)


def test_smoke_scales_upernet_to_128_pixels(smoke_cfg):
    cfg, factor = smoke_cfg(SEG)
    assert factor == 1 / 16
    assert cfg.model.data_preprocessor.size == (32, 32)
    assert cfg.model.test_cfg.crop_size == (32, 32)
    assert cfg.model.test_cfg.stride == (21, 21)
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert pipeline[2].scale == (128, 32)
    assert pipeline[2].ratio_range == (0.5, 2.0)
    assert pipeline[3].crop_size == (32, 32)
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (128, 32)
    # fp16 loss scaling needs CUDA; the optimizer stays the recipe's.
    recipe = Config.fromfile(SEG).optim_wrapper
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert 'loss_scale' not in cfg.optim_wrapper
    for key in ('optimizer', 'constructor', 'paramwise_cfg'):
        assert cfg.optim_wrapper[key] == recipe[key]
    assert cfg.train_cfg.max_iters == 2


def test_smoke_keeps_classification_image_size(smoke_cfg, smoke_data):
    config = REPO / 'configs/deit/deit-tiny_mpvg_4xb256_in1k.py'
    cfg, factor = smoke_cfg(config)
    assert factor == 1.0
    recipe = Config.fromfile(config)
    for split in ('train', 'test'):
        loader = cfg[f'{split}_dataloader']
        assert loader.dataset.pipeline == \
            recipe[f'{split}_dataloader'].dataset.pipeline
        assert loader.dataset.data_root == str(smoke_data / 'imagenet')
        assert (loader.batch_size, loader.dataset.indices) == (2, 2)
    assert cfg.work_dir == 'work_dirs/smoke/name'


def test_smoke_refuses_data_outside_data_dir(smoke_data):
    cfg = Config.fromfile(REPO / 'configs/deit/deit-tiny_mpvg_4xb256_in1k.py')
    cfg.train_dataloader.dataset.data_root = '/datasets/imagenet'
    with pytest.raises(ValueError, match="reads '/datasets/imagenet', not "
                       'a path under data/'):
        apply_smoke(cfg, str(smoke_data))


def test_smoke_names_the_command_that_writes_missing_data(tmp_path):
    cfg = Config.fromfile(REPO / 'configs/deit/deit-tiny_mpvg_4xb256_in1k.py')
    with pytest.raises(FileNotFoundError, match=f'{tmp_path}/imagenet does '
                       'not exist: write the generated data first with '
                       f'python tools/make_smoke_data.py {tmp_path}'):
        apply_smoke(cfg, str(tmp_path))


def test_smoke_data_has_the_real_layouts(smoke_data):
    files = {p.relative_to(smoke_data).as_posix()
             for p in smoke_data.rglob('*') if p.is_file()}
    for path in ('imagenet/meta/train.txt', 'imagenet/meta/val.txt',
                 'imagenet/val/ILSVRC2012_val_00000001.JPEG',
                 'cifar100/cifar-100-python/train',
                 'cifar100/cifar-100-python/test',
                 'cifar100/cifar-100-python/meta',
                 'coco/annotations/instances_train2017.json',
                 'coco/annotations/instances_val2017.json',
                 'coco/train2017/000001.jpg', 'coco/val2017/000002.jpg',
                 'ade/ADEChallengeData2016/images/training/'
                 'ADE_training_00000000.jpg',
                 'ade/ADEChallengeData2016/annotations/validation/'
                 'ADE_validation_00000001.png',
                 'shapes_coco/annotations/train.json',
                 'shapes_ade20k/images/validation/'
                 'ADE_validation_00000000.jpg'):
        assert path in files, path
    train_list = (smoke_data / 'imagenet/meta/train.txt').read_text()
    assert train_list.split('\n')[1] == 'n00000250/n00000250_1.JPEG 250'
    assert f'imagenet/train/{train_list.split()[0]}' in files
