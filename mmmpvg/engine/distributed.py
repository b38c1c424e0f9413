"""Distributed runs on CPU (gloo) next to the unchanged CUDA/NCCL path.

mmengine 0.10.7's launchers assume CUDA: ``init_dist`` calls
``torch.cuda.set_device`` and the Runner wraps the model in DDP with
``device_ids=[LOCAL_RANK]``. When CUDA is unavailable we start the process
group on gloo before the Runner exists (the Runner then skips ``init_dist``)
and ask for DDP without device ids. With CUDA nothing here runs.
"""
import datetime
import os
import subprocess

import torch
import torch.distributed as torch_dist

__all__ = ['cpu_distributed_env', 'init_cpu_process_group', 'use_cpu_ddp',
           'setup_cpu_distributed']


def cpu_distributed_env(launcher):
    """RANK, LOCAL_RANK, WORLD_SIZE and the master address for a launcher.

    Mirrors what mmengine's ``init_dist`` derives for ``pytorch``, ``slurm``
    and ``mpi``, minus the CUDA device selection.
    """
    env = os.environ
    if launcher == 'pytorch':  # torchrun exports everything
        derived = {}
    elif launcher == 'slurm':
        derived = dict(
            RANK=env['SLURM_PROCID'],
            LOCAL_RANK=env.get('SLURM_LOCALID', '0'),
            WORLD_SIZE=env['SLURM_NTASKS'])
        if 'MASTER_ADDR' not in env:
            derived['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {env["SLURM_NODELIST"]} | head -n1')
    elif launcher == 'mpi':
        derived = dict(
            RANK=env['OMPI_COMM_WORLD_RANK'],
            LOCAL_RANK=env['OMPI_COMM_WORLD_LOCAL_RANK'],
            WORLD_SIZE=env['OMPI_COMM_WORLD_SIZE'])
        if 'MASTER_ADDR' not in env:
            raise KeyError('launcher mpi: set MASTER_ADDR to the address of '
                           'the rank-0 host')
    else:
        raise ValueError(f'launcher must be pytorch, slurm or mpi for a '
                         f'distributed run, got {launcher!r}')
    derived.setdefault('MASTER_PORT', env.get('MASTER_PORT', '29500'))
    return derived


def init_cpu_process_group(launcher, timeout=None):
    """Join the gloo process group the launcher describes.

    Args:
        launcher (str): ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        timeout (int, optional): Seconds, as in ``env_cfg.dist_cfg``.
    """
    os.environ.update(cpu_distributed_env(launcher))
    kwargs = {}
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(
        backend='gloo', init_method='env://',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def use_cpu_ddp(cfg):
    """Make the Runner build DDP without device ids (CPU modules)."""
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return cfg


def setup_cpu_distributed(cfg):
    """Prepare a distributed CPU run of ``cfg`` (``cfg.launcher`` set).

    A no-op for ``launcher='none'`` and whenever CUDA is available.

    Returns:
        bool: Whether ``cfg`` was set up for a distributed CPU run.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if not torch_dist.is_initialized():
        dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg', {})
        init_cpu_process_group(launcher, timeout=dist_cfg.get('timeout'))
    use_cpu_ddp(cfg)
    return True
