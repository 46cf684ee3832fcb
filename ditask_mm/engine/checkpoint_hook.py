"""Checkpoints that are never half-written, and old ones removed only after the new one is safe.

mmengine 0.10.7 writes a checkpoint in place (``LocalBackend.put`` opens the
final name and writes), and its ``CheckpointHook`` deletes the checkpoint that
falls out of ``max_keep_ckpts`` (and the previous best one) *before* it saves
the new one. A full disk or a killed job during the save therefore leaves a
truncated ``epoch_N.pth`` and, with ``max_keep_ckpts=1``, no good checkpoint at
all.

* :class:`AtomicLocalBackend` (file backend ``'atomic_local'``) writes every
  file to a temporary name in the same folder, ``fsync``\\ s it, and
  ``os.replace``\\ s it onto the final name; on an error the temporary file is
  removed and the previous file of that name is untouched.
* :class:`AtomicCheckpointHook` is mmengine's ``CheckpointHook`` writing
  through that backend, deferring the removal of old checkpoints until the new
  one is on disk, and updating ``last_checkpoint`` (atomically) only then.
"""
import contextlib
import os.path as osp
from pathlib import Path
from typing import Iterator, List, Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook

from ..fileio import atomic_write_bytes
from ..registry import HOOKS

#: Name of :class:`AtomicLocalBackend` in mmengine's file-backend registry.
ATOMIC_BACKEND = 'atomic_local'


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, with atomic ``put`` and ``put_text``."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write_bytes(obj.encode(encoding), filepath)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


class _DeferredRemovals:
    """A file backend proxy that records ``remove``/``rmtree`` calls instead of running them."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.pending: List[tuple] = []

    def remove(self, filepath) -> None:
        self.pending.append(('remove', filepath))

    def rmtree(self, dir_path) -> None:
        self.pending.append(('rmtree', dir_path))

    def __getattr__(self, name):
        return getattr(self._backend, name)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that cannot leave a truncated checkpoint or lose the last good one.

    Takes every argument of mmengine's ``CheckpointHook``. Without
    ``backend_args`` (and ``file_client_args``) it writes through
    :class:`AtomicLocalBackend`; old checkpoints (``max_keep_ckpts``, the
    previous best) are removed only after the new checkpoint is complete, and
    ``last_checkpoint`` is rewritten atomically after that.
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get('backend_args') is None and kwargs.get('file_client_args') is None:
            kwargs['backend_args'] = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, **kwargs)

    @contextlib.contextmanager
    def _removals_after_success(self) -> Iterator[None]:
        backend = self.file_backend
        proxy = _DeferredRemovals(backend)
        self.file_backend = proxy
        try:
            yield
        finally:
            self.file_backend = backend
        keep = {osp.realpath(p) for p in (self.last_ckpt, getattr(self, 'best_ckpt_path', None)) if p}
        keep |= {osp.realpath(p) for p in getattr(self, 'best_ckpt_path_dict', {}).values() if p}
        for action, path in proxy.pending:
            if osp.realpath(path) in keep:  # the new checkpoint took the old one's name
                continue
            getattr(backend, action)(path)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        with self._removals_after_success():
            super()._save_checkpoint_with_step(runner, step, meta)
        if is_main_process() and self.last_ckpt:
            atomic_write_bytes(str(self.last_ckpt).encode(), osp.join(runner.work_dir, 'last_checkpoint'))

    def _save_best_checkpoint(self, runner, metrics) -> None:
        with self._removals_after_success():
            super()._save_best_checkpoint(runner, metrics)
