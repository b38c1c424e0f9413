"""Shared fixtures: the repository's tools and the digits demo, scaled down,
run in this process."""
import importlib.util
import pathlib
import uuid

import pytest
import torch
from mmengine.registry import DefaultScope

# Assertions in the shared test helpers explain their failures too.
pytest.register_assert_rewrite('model_zoo', 'pe_reference')

REPO = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'slurm: starts a one-node Slurm cluster (root, apt); '
        'skipped with the reason where it cannot')
    config.addinivalue_line(
        'markers', 'cuda: needs a CUDA GPU (skipped without one); '
        'tools/gpu_check.sh runs `pytest -m cuda` and fails on any skip')
    config.addinivalue_line(
        'markers', 'slow: trains, compiles or launches a subprocess; '
        '`pytest -m "not slow"` is the fast inner loop')
    config.addinivalue_line(
        'markers', 'install: builds the wheel and installs it into a fresh '
        'venv from the package index (minutes; also marked slow)')


def pytest_collection_modifyitems(config, items):
    # Under pytest-xdist (`-n 2 --dist loadgroup`), the Slurm tests share
    # one worker: they start one cluster per module, and two at once would
    # fight over slurmctld's port and state files.
    for item in items:
        if item.get_closest_marker('slurm'):
            item.add_marker(pytest.mark.xdist_group('slurm'))


@pytest.fixture(autouse=True)
def isolated_default_scope():
    """Start each test with no mmengine default scope: a Runner (or a config
    loaded by a module fixture) leaves its scope, e.g. mmpretrain, current
    for the whole process, and registries then build from that scope's
    registry, where mmdet/mmseg modules are absent."""
    saved = dict(DefaultScope._instance_dict)
    DefaultScope._instance_dict.clear()
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


@pytest.fixture(scope='session')
def repo_root():
    return REPO


@pytest.fixture(scope='session')
def demo_config():
    """The classification demo: a micro MPVG ViT on scikit-learn digits."""
    return REPO / 'configs' / 'demo' / 'mpvg_vit-micro_digits.py'


@pytest.fixture(scope='session')
def tiny_digits_options():
    """``--cfg-options`` for seconds-long runs of the demo: 128 training
    images in batches of 32 (4 iterations an epoch on one process), 101 test
    images (odd, so two ranks need a padded sample), 3 epochs (the demo's
    schedule: 2 warm-up epochs, then cosine) with a checkpoint after each,
    validation after the last, a log line per iteration, deterministic
    algorithms."""
    return (
        'train_dataloader.dataset.num_samples=128',
        'train_dataloader.batch_size=32',
        'val_dataloader.dataset.num_samples=101',
        'test_dataloader.dataset.num_samples=101',
        'train_cfg.max_epochs=3',
        'train_cfg.val_interval=3',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.type=AtomicCheckpointHook',
        'default_hooks.checkpoint.interval=1',
        'randomness.deterministic=True',
    )


def _load_tool(name):
    path = REPO / 'tools' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(f'tools_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tool_fixture(name):
    """A session fixture ``<name>_tool``: tools/<name>.py as a module."""
    def tool():
        return _load_tool(name)
    tool.__doc__ = f'tools/{name}.py as a module.'
    return pytest.fixture(tool, scope='session', name=f'{name}_tool')


# train and test: ``parse_args``, ``build_runner`` (test also ``main``).
train_tool = _tool_fixture('train')
test_tool = _tool_fixture('test')
benchmark_tool = _tool_fixture('benchmark')
benchmark_adapter_tool = _tool_fixture('benchmark_adapter')


@pytest.fixture(scope='session')
def gpu_check_tool():
    """tools/gpu_check.py as a module."""
    return _load_tool('gpu_check')


@pytest.fixture(scope='session')
def gpu_bundle_tool():
    """tools/gpu_bundle.py as a module."""
    return _load_tool('gpu_bundle')


@pytest.fixture(scope='module')
def one_thread():
    """The micro models gain nothing from threads; on a busy machine extra
    OpenMP threads only wait for each other (7x slower runs measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_determinism():
    """``randomness.deterministic=True`` switches torch globally; undo it."""
    yield
    torch.use_deterministic_algorithms(False)


@pytest.fixture(scope='session')
def make_runner():
    """``make_runner(tool, config, work_dir, options, *args)``: the Runner
    tools/train.py or tools/test.py (``tool``) builds for that command line,
    under its own experiment name so that MMEngine's per-experiment
    singletons (logger, message hub) of runs in one process stay apart."""

    def make(tool, config, work_dir, options, *args):
        argv = [str(config), *map(str, args), '--work-dir', str(work_dir),
                '--cfg-options', *options,
                f'experiment_name={pathlib.Path(work_dir).name}-'
                f'{uuid.uuid4().hex}']
        return tool.build_runner(tool.parse_args(argv))

    return make
