"""Every rank evaluates the model that is saved: rank 0's buffers, broadcast before validation.

DDP keeps parameters equal across ranks, but not BatchNorm running
statistics: with plain BN (SyncBN has no CPU/gloo implementation, and the
decode heads use BN by default) each rank updates them from its own shard.
Validation in DDP then scores a different model on every rank, while the
checkpoint holds rank 0's. Broadcasting rank 0's persistent buffers after
each training epoch and before each validation makes the evaluated model the
saved one, exactly. (mmengine's ``SyncBuffersHook`` averages the buffers
instead, which evaluates a model that no rank ever saves before the next
epoch's checkpoint.)
"""
from typing import List

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_world_size, is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS


def persistent_buffers(module: torch.nn.Module) -> List[torch.Tensor]:
    """The buffers of ``module`` that its state dict holds (non-persistent caches are left out)."""
    buffers = []
    for sub in module.modules():
        skipped = getattr(sub, '_non_persistent_buffers_set', set())
        buffers += [buf for name, buf in sub._buffers.items() if buf is not None and name not in skipped]
    return buffers


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> int:
    """Copy rank ``src``'s persistent buffers of ``module`` to every rank; returns how many (0 if not distributed)."""
    if not is_distributed() or get_world_size() < 2:
        return 0
    buffers = persistent_buffers(module)
    for buf in buffers:
        torch_dist.broadcast(buf, src=src)
    return len(buffers)


@HOOKS.register_module()
class BroadcastBuffersHook(Hook):
    """Broadcast rank 0's buffers (BatchNorm statistics) after each training epoch and before validation.

    Runs before the checkpoint hook, and does nothing in a single process.
    """

    priority = 'ABOVE_NORMAL'

    def _sync(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        broadcast_buffers(model)

    def after_train_epoch(self, runner) -> None:
        self._sync(runner)

    def before_val_epoch(self, runner) -> None:
        self._sync(runner)

    def before_test_epoch(self, runner) -> None:
        self._sync(runner)
