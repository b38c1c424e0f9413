"""tools/slurm_train.sh and slurm_test.sh against a real Slurm: a one-node
cluster started for this module (tests/slurm_cluster.py) runs a 2-task CPU
training of the digits demo and its 2-task evaluation."""

import pytest
from slurm_cluster import PARTITION, SlurmCluster, SlurmUnavailable
from slurm_cluster import install_slurm
from test_distributed import (assert_two_ranks_tested_every_sample_once,
                              assert_two_ranks_trained_alike, dist_config,
                              run, tool_env)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.slurm,
    pytest.mark.usefixtures('one_thread', 'restore_determinism'),
]


@pytest.fixture(scope='module')
def slurm_cluster(tmp_path_factory):
    """A running single-node cluster; the module is skipped, with the
    reason and the daemons' log tails, where Slurm cannot be started."""
    try:
        install_slurm()
        cluster = SlurmCluster(tmp_path_factory.mktemp('slurm')).start()
    except SlurmUnavailable as error:
        pytest.skip(f'no Slurm cluster: {error}')
    yield cluster
    cluster.stop()


def slurm_env(cluster, pythonpath=None):
    """2 tasks on the one node, one CPU (and one torch thread) each, no
    GPUs: the CPU partition has no ``gpu`` GRES, so ``--gres=none`` (the
    last ``--gres`` on srun's command line wins) cancels the script's."""
    env = cluster.env(tool_env(pythonpath))
    env.update(GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1',
               SRUN_ARGS='--gres=none', MASTER_PORT=env['PORT'])
    return env


@pytest.fixture(scope='module')
def slurm_train(slurm_cluster, tmp_path_factory, demo_config,
                tiny_digits_options, repo_root):
    """Two Slurm tasks train the demo for 3 epochs on 128 images."""
    root = tmp_path_factory.mktemp('slurm_train')
    work_dir = root / 'train'
    # A recipe total batch (read by collect_results.py) to compare with.
    run(['bash', repo_root / 'tools/slurm_train.sh', PARTITION, 'mpvg-train',
         dist_config(root, demo_config), work_dir, '--cfg-options',
         *tiny_digits_options, 'auto_scale_lr.base_batch_size=128'],
        slurm_env(slurm_cluster, root))
    return work_dir


def test_slurm_tasks_hold_the_same_trained_weights_and_log_it(slurm_train):
    assert_two_ranks_trained_alike(slurm_train, 'slurm')


def test_slurm_test_evaluates_every_sample_once(
        slurm_cluster, slurm_train, make_runner, test_tool, demo_config,
        tiny_digits_options, repo_root, tmp_path):
    checkpoint = slurm_train / 'epoch_3.pth'
    two, one = tmp_path / 'slurm', tmp_path / 'one_process'
    run(['bash', repo_root / 'tools/slurm_test.sh', PARTITION, 'mpvg-test',
         demo_config, checkpoint, '--work-dir', two, '--out',
         two / 'preds.pkl', '--cfg-options', *tiny_digits_options],
        slurm_env(slurm_cluster))
    metrics_one = make_runner(test_tool, demo_config, one,
                              tiny_digits_options, checkpoint).test()
    assert_two_ranks_tested_every_sample_once(two, 'slurm',
                                              metrics_one['accuracy/top1'])


def test_collect_results_reads_the_world_size_from_the_slurm_log(
        slurm_train, tmp_path):
    from test_collect_results import load_collect_results, markdown_tables
    report = load_collect_results().collect(
        [str(slurm_train)], param_cache=str(tmp_path / 'params.json'))
    run, = markdown_tables(report)['Unmapped runs']
    assert run['recipe'] == 'total batch 64 (2x32) != 128'
