"""A CheckpointHook whose checkpoints survive a kill in the middle of a save.

MMEngine's CheckpointHook deletes the outdated checkpoint first and then
writes the new one in place, followed by ``last_checkpoint`` (in place too).
A job killed during that write (pre-emption, OOM killer, a node failure)
can leave a truncated newest checkpoint, a torn ``last_checkpoint``, or, with
``max_keep_ckpts=1``, no checkpoint at all.

``AtomicCheckpointHook`` writes each checkpoint to a temporary file beside
the final one, flushes it to disk and renames it into place, then updates
``last_checkpoint`` the same way, and only then deletes the outdated
checkpoint. Use it in a config with::

    default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
"""
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

__all__ = ['AtomicCheckpointHook', 'replace_atomically']


def replace_atomically(tmp_path, path):
    """Move a fully written ``tmp_path`` onto ``path``, durably.

    ``os.replace`` is atomic on POSIX, so ``path`` is always the old or the
    new complete file; the fsyncs keep it so across a machine crash.
    """
    with open(tmp_path, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    dir_fd = os.open(osp.dirname(osp.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """CheckpointHook that never leaves a torn or missing latest checkpoint.

    Same arguments as :class:`mmengine.hooks.CheckpointHook`. Checkpoints on
    non-local storage (object stores replace objects whole) are written as
    MMEngine does.
    """

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)

        outdated_step = self._retire_outdated_step(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        partial_name = f'{filename}.partial'
        runner.save_checkpoint(
            self.out_dir,
            partial_name,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():  # Runner.save_checkpoint is master-only
            return

        replace_atomically(osp.join(self.out_dir, partial_name),
                           self.last_ckpt)
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        with open(f'{pointer}.partial', 'w') as f:
            f.write(self.last_ckpt)
        replace_atomically(f'{pointer}.partial', pointer)

        if outdated_step is not None:
            outdated = osp.join(self.out_dir,
                                self.filename_tmpl.format(outdated_step))
            if osp.isfile(outdated):
                os.remove(outdated)

    def _retire_outdated_step(self, runner, step):
        """Track ``step`` in ``keep_ckpt_ids`` and return the step whose
        checkpoint is now beyond ``max_keep_ckpts`` (deleted after the save).
        """
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids
                                        and self.keep_ckpt_ids[-1] == step):
            return None
        outdated = None
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            outdated = self.keep_ckpt_ids.popleft()
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))
        return outdated
