"""Training infrastructure: safe checkpoint loading, atomic checkpoints,
CPU mixed precision and CPU distributed runs for MMEngine's Runner.

Importing this package (``import mmmpvg`` does) guards MMEngine's checkpoint
loaders with the allow-list of types its checkpoints hold.
"""
from .amp import CPUAmpOptimWrapper, enable_amp, enable_test_amp
from .checkpoint_compat import (CheckpointCompatibilityHook,
                                CheckpointMismatchError)
from .checkpoint_hook import AtomicCheckpointHook, replace_atomically
from .checkpoint_loading import (MMENGINE_CHECKPOINT_GLOBALS,
                                 UnsafeCheckpointError,
                                 install_checkpoint_allowlist,
                                 mmengine_checkpoint_globals)
from .distributed import (cpu_distributed_env, init_cpu_process_group,
                          setup_cpu_distributed, use_cpu_ddp)

install_checkpoint_allowlist()

__all__ = [
    'AtomicCheckpointHook', 'CheckpointCompatibilityHook',
    'CheckpointMismatchError', 'CPUAmpOptimWrapper',
    'MMENGINE_CHECKPOINT_GLOBALS', 'UnsafeCheckpointError',
    'cpu_distributed_env', 'enable_amp', 'enable_test_amp',
    'init_cpu_process_group',
    'install_checkpoint_allowlist', 'mmengine_checkpoint_globals',
    'replace_atomically', 'setup_cpu_distributed', 'use_cpu_ddp'
]
