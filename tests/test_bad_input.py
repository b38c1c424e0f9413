"""The reliability guide's "Bad input" table, one row a test: each mistake
gets one clear message naming the problem, raised before anything already
written is touched."""
import os
import pathlib
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS

import mmmpvg.models  # noqa: F401
from mmmpvg.engine import CheckpointMismatchError
from mmmpvg.engine.checkpoint_loading import DamagedCheckpointError
from mmmpvg.engine.cli import run_tool as run_cli

pytestmark = pytest.mark.usefixtures('one_thread', 'restore_determinism')
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def run_tool(make_runner, train_tool, test_tool, demo_config,
             tiny_digits_options, tmp_path):
    """``run_tool('train'|'test', *args, options=())``: tools/train.py or
    tools/test.py on the demo config, in ``tmp_path/work``."""

    def run(kind, *args, options=()):
        tool = train_tool if kind == 'train' else test_tool
        runner = make_runner(tool, demo_config, tmp_path / 'work',
                             (*tiny_digits_options, *options), *args)
        return runner.train() if kind == 'train' else runner.test()

    return run


def demo_model(**backbone):
    cfg = Config.fromfile(REPO / 'configs/demo/mpvg_vit-micro_digits.py')
    cfg.model.backbone.update(backbone)
    return MODELS.build(cfg.model)


def save(model, path):
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def files(directory):
    return {p: p.read_bytes() for p in pathlib.Path(directory).rglob('*.pth')}


def test_unknown_pe_method(run_tool):
    with pytest.raises(ValueError, match="Unknown PE method 'mvpg'"):
        run_tool('train', options=['model.backbone.pe_cfg.method=mvpg'])


def test_unknown_pe_knob(run_tool):
    with pytest.raises(ValueError, match=r"Unknown PE knob\(s\) \['layer0'\]"):
        run_tool('train', options=['model.backbone.pe_cfg.layer0=True'])


def test_image_size_not_divisible_by_the_patch():
    model = demo_model()
    patch = model.backbone.patch_size
    with pytest.raises(ValueError, match=f'30x30 is not divisible by the '
                       f'patch size {patch}'):
        model(torch.zeros(1, 3, 30, 30), mode='tensor')


def test_checkpoint_of_another_pe_method(run_tool, tmp_path):
    lape = save(demo_model(global_pool='cls', pe_cfg=dict(method='lape')),
                tmp_path / 'lape.pth')
    with pytest.raises(CheckpointMismatchError,
                       match='trained with another PE method'):
        run_tool('test', lape)


@pytest.mark.parametrize('arch,named', [
    (dict(embed_dims=96, num_layers=4), 'backbone.patch_embed.projection'),
    (dict(embed_dims=64, num_layers=6), 'weights not in the model'),
])
def test_checkpoint_of_another_size_with_the_same_pe_method(
        run_tool, tmp_path, arch, named):
    """Not "another PE method": the PE norms differ because the layers do."""
    other = save(demo_model(arch=dict(arch, num_heads=4,
                                      feedforward_channels=128)),
                 tmp_path / 'other.pth')
    with pytest.raises(CheckpointMismatchError,
                       match='another model size') as error:
        run_tool('test', other)
    assert named in str(error.value)
    assert 'another PE method' not in str(error.value)


def test_damaged_checkpoint(run_tool, tmp_path):
    path = save(demo_model(), tmp_path / 'cut.pth')
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DamagedCheckpointError,
                       match=f'Cannot read checkpoint {path}: '):
        run_tool('test', path)


@pytest.mark.parametrize('content,message', [
    (None, "data_root '{root}' does not exist"),
    ('', "data_root '{root}' is an empty folder: put the data set there"),
    ('images', "The data set ImageNet at '{root}' lacks a file its config "
     'names: .*train'),
], ids=['missing', 'empty', 'another-layout'])
def test_data_root(content, message, make_runner, train_tool, tmp_path):
    """A data root that is missing, empty, or holds another layout (here
    an images/ folder where ImageNet's train/ and meta/ belong)."""
    root = tmp_path / 'imagenet'
    if content is not None:
        (root / content).mkdir(parents=True)
    config = REPO / 'configs/deit/deit-tiny_mpvg_4xb256_in1k.py'
    runner = make_runner(train_tool, config, tmp_path / 'work', [
        f'train_dataloader.dataset.data_root={root}'])
    with pytest.raises(FileNotFoundError,
                       match=message.format(root=root)):
        runner.train()


def test_empty_data_set(run_tool):
    with pytest.raises(ValueError,
                       match='The data set SklearnDigits is empty'):
        run_tool('train',
                 options=['train_dataloader.dataset.num_samples=0'])


def test_num_classes_differs_from_the_checkpoint_head(run_tool, tmp_path):
    path = save(demo_model(), tmp_path / 'ten_classes.pth')
    (tmp_path / 'work').mkdir()
    before = files(tmp_path)
    with pytest.raises(CheckpointMismatchError,
                       match='another number of classes'):
        run_tool('train', options=[f'load_from={path}',
                                   'model.head.num_classes=5',
                                   'data_preprocessor.num_classes=5'])
    assert files(tmp_path) == before


@pytest.mark.slow
def test_more_processes_than_the_machine_runs(tmp_path, demo_config):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='',
               PATH=f'{pathlib.Path(sys.executable).parent}:'
               f'{os.environ["PATH"]}')
    result = subprocess.run(
        ['bash', REPO / 'tools/dist_train.sh', demo_config,
         str(len(os.sched_getaffinity(0)) + 1), '--work-dir',
         tmp_path / 'work'], env=env, capture_output=True, text=True,
        timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        f'error: asked for {len(os.sched_getaffinity(0)) + 1} processes on '
        'this node, but it has')
    assert not (tmp_path / 'work').exists()  # nothing was started


def test_random_bytes_as_checkpoint(run_tool, tmp_path):
    path = tmp_path / 'random.pth'
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DamagedCheckpointError,
                       match=f'Cannot read checkpoint {path}: it is not a '
                       'file torch.save wrote'):
        run_tool('test', path)


@pytest.fixture
def tool_argv(demo_config, tiny_digits_options, tmp_path):
    """tools/train.py's command line for the demo, plus ``extra``."""

    def argv(*extra, options=()):
        return [str(demo_config), '--work-dir', str(tmp_path / 'work'),
                *extra, '--cfg-options', *tiny_digits_options, *options,
                f'experiment_name=cli-{uuid.uuid4().hex}']

    return argv


def test_reported_error_is_the_last_line_without_traceback(
        train_tool, tool_argv, capsys):
    argv = tool_argv(options=['model.backbone.pe_cfg.method=mvpg'])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_tool.main, argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(
        "error: Unknown PE method 'mvpg'")
    assert err.strip().endswith('(--debug shows the traceback)')
    assert 'Traceback' not in err


def test_debug_keeps_the_traceback(train_tool, tool_argv):
    argv = tool_argv('--debug', options=['model.backbone.pe_cfg.method=mvpg'])
    with pytest.raises(ValueError, match="Unknown PE method 'mvpg'"):
        run_cli(train_tool.main, argv)


def test_errors_outside_mmmpvg_keep_their_traceback(train_tool, tool_argv):
    """A registry's KeyError (an unknown type) is not ours to shorten."""
    argv = tool_argv(options=['model.head.type=NoSuchHead'])
    with pytest.raises(KeyError, match='NoSuchHead'):
        run_cli(train_tool.main, argv)


@pytest.mark.slow
def test_train_script_ends_with_the_error_line(tmp_path, tool_argv):
    path = tmp_path / 'random.pth'
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    result = subprocess.run(
        [sys.executable, REPO / 'tools/train.py',
         *tool_argv(options=[f'load_from={path}'])],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1'))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f'error: Cannot read checkpoint {path}: it is not a file torch.save '
        'wrote (neither a zip archive nor the legacy pickle format). Check '
        'the path, or download or copy the checkpoint again. (--debug shows '
        'the traceback)')
    assert 'Traceback' not in result.stderr
