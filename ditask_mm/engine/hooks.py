"""Training hooks."""
import math
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook

from ..registry import HOOKS
from .work_dir import last_good_checkpoint


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


@HOOKS.register_module()
class NaNLossGuardHook(Hook):
    """Stop training as soon as the loss is NaN or infinite.

    It runs right after each training iteration with the highest priority,
    before the checkpoint hook, so no checkpoint is written from non-finite
    weights. The error names the last good checkpoint (see
    :func:`last_good_checkpoint`) or says that none has been written yet.

    Args:
        check_params: Also check every trainable parameter (slower).
    """

    priority = 'VERY_HIGH'

    def __init__(self, check_params: bool = False) -> None:
        self.check_params = check_params

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs: Optional[dict] = None) -> None:
        outputs = outputs or {}
        values = {k: float(v.detach()) if torch.is_tensor(v) else v for k, v in outputs.items()}
        bad = {k: v for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)}
        if not bad and self.check_params:
            model = getattr(runner.model, 'module', runner.model)
            bad = {n: float('nan') for n, p in model.named_parameters()
                   if p.requires_grad and not bool(p.isfinite().all())}
        if bad:
            checkpoint, where = last_good_checkpoint(runner.work_dir)
            if checkpoint is None:
                advice = (f'{where}. Lower the learning rate or check the inputs, then start the training '
                          'again.')
            else:
                advice = (f'the last good checkpoint is {checkpoint} ({where}). Lower the learning rate, '
                          f'check the inputs, or resume from it with --resume {checkpoint}.')
            raise NonFiniteLossError(
                f'non-finite values at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): {bad}. '
                f'Training stopped before writing a checkpoint from these weights; {advice}')


@HOOKS.register_module()
class EpochReseedHook(Hook):
    """Reseed Python, NumPy and torch at the start of every training epoch.

    mmengine's checkpoints do not hold the global random state, so after
    ``--resume`` the augmentations drawn in the main process (and dropout)
    would differ from an uninterrupted run. Seeding each epoch from
    ``(seed, epoch, rank)`` makes a run resumed from an epoch checkpoint
    continue exactly as the uninterrupted one (bit for bit on CPU with
    ``num_workers=0``; worker processes are seeded by mmengine).

    Args:
        seed: Base seed; defaults to the runner's seed.
    """

    priority = 'VERY_HIGH'

    def __init__(self, seed: Optional[int] = None) -> None:
        self.seed = seed

    def before_train_epoch(self, runner) -> None:
        base = self.seed if self.seed is not None else (runner.seed or 0)
        seed = (base * 1_000_003 + runner.epoch * 7919 + runner.rank) % 2**31
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
