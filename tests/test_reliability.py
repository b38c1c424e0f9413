"""Checkpoints load the way a user relies on: pre-trained weights survive
``init_weights`` whatever form ``init_cfg`` takes, a PE stored at another
grid is resized on load (and refused on ``--resume``), ``--resume`` never
restarts from scratch because of a damaged checkpoint, and the converter
reads every ViT checkpoint layout it names."""
import argparse
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import load_checkpoint
from mmpretrain.registry import MODELS
from timm.models.vision_transformer import VisionTransformer

import mmmpvg.models  # noqa: F401
from mmmpvg.engine import CheckpointMismatchError
from mmmpvg.models.converters import (convert_deit_state_dict,
                                      read_vit_checkpoint)
from pe_families import bicubic_reference

pytestmark = pytest.mark.usefixtures('one_thread', 'restore_determinism')
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# What torch.amp.GradScaler('cpu').state_dict() holds (that scaler is
# torch >= 2.3).
GRAD_SCALER_STATE = dict(scale=65536.0, growth_factor=2.0, backoff_factor=0.5,
                         growth_interval=2000, _growth_tracker=0)
MICRO = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)


def classifier(img_size=32, global_pool='avg', method='mpvg',
               backbone_init=None, init_cfg=None):
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='PEVisionTransformer', arch=MICRO,
                      img_size=img_size, patch_size=4,
                      global_pool=global_pool, pe_cfg=dict(method=method),
                      init_cfg=backbone_init),
        neck=None,
        head=dict(type='LinearClsHead', num_classes=10, in_channels=32),
        init_cfg=init_cfg))


def randomised(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize('global_pool, extra', [('avg', 0), ('cls', 1)])
@pytest.mark.parametrize('route', ['load_state_dict', 'load_checkpoint',
                                   'Pretrained'])
def test_pe_of_another_grid_is_resized_on_load(tmp_path, global_pool, extra,
                                               route):
    method = 'mpvg' if global_pool == 'avg' else 'lape'
    source = randomised(classifier(32, global_pool, method))
    path = tmp_path / 'grid8.pth'
    torch.save(dict(state_dict=source.state_dict()), path)
    expected = bicubic_reference(source.backbone.pos_embed, 8, 12, extra)

    if route == 'load_state_dict':
        model = classifier(48, global_pool, method)
        model.load_state_dict(source.state_dict())
    elif route == 'load_checkpoint':
        model = classifier(48, global_pool, method)
        load_checkpoint(model, str(path), strict=True)
    else:
        model = classifier(48, global_pool, method, backbone_init=dict(
            type='Pretrained', checkpoint=str(path), prefix='backbone.'))
        model.init_weights()

    assert model.backbone.pos_embed.shape == expected.shape
    torch.testing.assert_close(model.backbone.pos_embed, expected)
    # Everything else loaded unchanged.
    for key, value in source.backbone.state_dict().items():
        if key != 'pos_embed':
            assert torch.equal(model.backbone.state_dict()[key], value), key


def test_pe_of_another_pooling_is_refused_by_name():
    gap = randomised(classifier(32, 'avg', 'pvg'))
    cls_model = classifier(32, 'cls', 'lape')
    with pytest.raises(ValueError, match='class-token row'):
        cls_model.backbone.load_state_dict(gap.backbone.state_dict(),
                                           strict=False)


@pytest.fixture(scope='module')
def three_epochs(make_runner, train_tool, demo_config, tiny_digits_options,
                 tmp_path_factory):
    """A finished 3-epoch run keeping every checkpoint."""
    work_dir = tmp_path_factory.mktemp('three_epochs')
    runner = make_runner(train_tool, demo_config, work_dir,
                         (*tiny_digits_options,
                          'default_hooks.checkpoint.max_keep_ckpts=-1'))
    runner.train()
    torch.use_deterministic_algorithms(False)
    return work_dir


@pytest.mark.slow
def test_load_from_at_another_image_size_resizes_and_logs(
        make_runner, train_tool, demo_config, tiny_digits_options,
        three_epochs, tmp_path):
    options = (*tiny_digits_options,
               'model.backbone.img_size=48',
               f'load_from={three_epochs}/epoch_3.pth')
    runner = make_runner(train_tool, demo_config, tmp_path, options)
    runner.train()
    patch = runner.model.backbone.patch_size
    old, new = 32 // patch, 48 // patch
    log = open(f'{runner.log_dir}/{runner.timestamp}.log').read()
    assert f'Resized backbone.pos_embed from a {old}x{old} to a ' \
        f'{new}x{new} grid' in log


@pytest.mark.slow
def test_resume_at_another_image_size_is_refused(
        make_runner, train_tool, demo_config, tiny_digits_options,
        three_epochs, tmp_path):
    checkpoint = f'{three_epochs}/epoch_1.pth'
    before = open(checkpoint, 'rb').read()
    runner = make_runner(train_tool, demo_config, tmp_path,
                         (*tiny_digits_options, 'model.backbone.img_size=48'),
                         '--resume', checkpoint)
    with pytest.raises(CheckpointMismatchError,
                       match='position embedding grid differs'):
        runner.train()
    assert open(checkpoint, 'rb').read() == before  # nothing lost


def with_earlier_names(checkpoint, path):
    """The checkpoint as mmmpvg saved it before the backbone contract."""
    state = torch.load(checkpoint, weights_only=False)
    state['state_dict'] = {
        key.replace('backbone.pos_embed', 'backbone.pe.pos_embed').replace(
            'backbone.ln1.', 'backbone.last_norm.'): value
        for key, value in state['state_dict'].items()}
    torch.save(state, path)
    return path


@pytest.mark.slow
def test_checkpoint_with_earlier_names_loads_but_does_not_resume(
        make_runner, train_tool, demo_config, tiny_digits_options,
        three_epochs, tmp_path):
    old = with_earlier_names(f'{three_epochs}/epoch_1.pth',
                             tmp_path / 'old.pth')
    runner = make_runner(train_tool, demo_config, tmp_path / 'resume',
                         tiny_digits_options, '--resume', old)
    with pytest.raises(CheckpointMismatchError,
                       match='earlier parameter names.*load_from='):
        runner.train()
    runner = make_runner(train_tool, demo_config, tmp_path / 'load',
                         (*tiny_digits_options, f'load_from={old}'))
    runner.train()
    log = open(f'{runner.log_dir}/{runner.timestamp}.log').read()
    assert 'renamed 3 key(s) of a checkpoint saved with earlier' in log


def copy_run(source, target):
    for name in ('epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth'):
        (target / name).write_bytes((source / name).read_bytes())
    (target / 'last_checkpoint').write_text(str(target / 'epoch_3.pth'))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.slow
def test_resume_skips_a_damaged_latest_checkpoint_with_a_warning(
        make_runner, train_tool, demo_config, tiny_digits_options,
        three_epochs, tmp_path):
    copy_run(three_epochs, tmp_path)
    truncate(tmp_path / 'epoch_3.pth')
    runner = make_runner(train_tool, demo_config, tmp_path,
                         (*tiny_digits_options,
                          'default_hooks.checkpoint.max_keep_ckpts=-1'),
                         '--resume')
    runner.train()
    log = open(f'{runner.log_dir}/{runner.timestamp}.log').read()
    assert f'Skipping damaged checkpoint(s) {tmp_path}/epoch_3.pth' in log
    assert 'resumed epoch: 2, iter: 8' in log
    assert runner.iter == 12  # the planned end


@pytest.mark.slow
def test_resume_with_only_damaged_checkpoints_stops(
        make_runner, train_tool, demo_config, tiny_digits_options,
        three_epochs, tmp_path):
    copy_run(three_epochs, tmp_path)
    for name in ('epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth'):
        truncate(tmp_path / name)
    with pytest.raises(RuntimeError, match='Refusing to restart from scratch'):
        make_runner(train_tool, demo_config, tmp_path, tiny_digits_options,
                    '--resume')
    with pytest.raises(RuntimeError, match='epoch_2.pth: not a complete'):
        make_runner(train_tool, demo_config, tmp_path, tiny_digits_options,
                    '--resume', tmp_path / 'epoch_2.pth')


# ----------------------------------------------------------------- converter
def mmpretrain_deit(seed=0):
    """mmpretrain's own VisionTransformer classifier (an independent model)."""
    return randomised(MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer', arch=MICRO, img_size=32,
                      patch_size=4),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=10,
                  in_channels=32))), seed)


def runner_checkpoint(state_dict, **extra):
    hub = dict(log_scalars={'train/loss': HistoryBuffer([0.5], [1]),
                            'val/top1': HistoryBuffer()})
    return dict(meta=dict(epoch=3, dataset_meta=dict(classes=list('abc'))),
                state_dict=state_dict, message_hub=hub, **extra)


def converted_logits(path, use_ema=False, method='default', pool='cls'):
    if not hasattr(torch.serialization, 'safe_globals'):
        # A training checkpoint pickles more than tensors.
        with pytest.raises(ValueError, match='needs torch >= 2.5'):
            read_vit_checkpoint(str(path), use_ema=use_ema)
        pytest.skip('reading training checkpoints safely needs torch >= 2.5 '
                    '(torch.serialization.safe_globals); the one-line '
                    'error that says so was checked')
    source, kind = read_vit_checkpoint(str(path), use_ema=use_ema)
    state, _ = convert_deit_state_dict(source, dict(method=method), pool)
    model = classifier(32, pool, method).eval()
    model.head = MODELS.build(dict(type='VisionTransformerClsHead',
                                   num_classes=10, in_channels=32))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    return model, kind, missing


def test_mmpretrain_checkpoint_converts_to_the_same_logits(tmp_path):
    reference = mmpretrain_deit()
    ema = mmpretrain_deit(seed=1)
    ema_state = {f'module.{k}': v for k, v in ema.state_dict().items()}
    ema_state['steps'] = torch.tensor(10)
    path = tmp_path / 'mmpretrain.pth'
    torch.save(runner_checkpoint(reference.state_dict(),
                                 ema_state_dict=ema_state), path)
    image = torch.randn(2, 3, 32, 32)

    for use_ema, expected in ((False, reference), (True, ema)):
        model, kind, missing = converted_logits(path, use_ema)
        assert kind == 'mmpretrain' and not missing
        with torch.no_grad():
            torch.testing.assert_close(
                model(image, mode='tensor'), expected(image, mode='tensor'))


def timm_deit(seed):
    """timm's VisionTransformer: the model official DeiT/LaPE checkpoints
    hold."""
    return randomised(VisionTransformer(
        img_size=32, patch_size=4, num_classes=10, embed_dim=32, depth=2,
        num_heads=2, mlp_ratio=2), seed)


def test_official_deit_training_checkpoint_loads_safely(tmp_path):
    """DeiT's and LaPE's main.py save args (an argparse.Namespace), the
    optimizer, lr scheduler, AMP scaler and the EMA model."""
    weights, ema = timm_deit(0), timm_deit(1)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    path = tmp_path / 'checkpoint.pth'
    torch.save(dict(
        model=weights.state_dict(), model_ema=ema.state_dict(),
        optimizer=optimizer.state_dict(),
        lr_scheduler=dict(t_initial=300, base_values=[5e-4]), epoch=299,
        scaler=GRAD_SCALER_STATE,
        args=argparse.Namespace(model='deit_tiny_patch16_224', lr=5e-4,
                                model_ema=True, output_dir='out')), path)
    image = torch.randn(2, 3, 32, 32)

    for use_ema, expected in ((False, weights), (True, ema)):
        converted, kind, missing = converted_logits(path, use_ema)
        assert kind == 'official DeiT/LaPE' and not missing
        with torch.no_grad():
            torch.testing.assert_close(converted(image, mode='tensor'),
                                       expected(image))


@pytest.mark.parametrize('content, message', [
    ('text', 'is not a PyTorch checkpoint'),
    ('resnet', 'holds no DeiT/ViT weights'),
    ('foreign', 'refusing to unpickle'),
    ('no ema', "has no 'model_ema' entry"),
])
@pytest.mark.slow
def test_converter_rejects_other_files_in_one_sentence(tmp_path, content,
                                                       message):
    path = tmp_path / 'input.pth'
    if content == 'text':
        path.write_text('not a checkpoint\n')
    elif content == 'resnet':
        torch.save({'conv1.weight': torch.ones(1), 'fc.bias': torch.ones(1)},
                   path)
    elif content == 'foreign':
        torch.save(dict(model={}, extra=Config(dict(a=1))), path)
    else:
        torch.save(dict(model=timm_deit(0).state_dict()), path)
    ema = ['--ema'] if content == 'no ema' else []
    result = subprocess.run(
        [sys.executable, 'tools/model_converters/deit_to_mmmpvg.py',
         str(path), str(tmp_path / 'out.pth'), *ema],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and message in last, result.stderr
    assert str(path) in last
    assert not (tmp_path / 'out.pth').exists()
