"""The interface of multi-task loss balancers, and the cross-rank reductions they share.

A balancer turns the per-task losses ``{task: L_t}`` of one training step into
weighted losses ``{task: w_t·L_t}`` (plus any extra term of its own), and
reports its weights for the log. Every task loss ``L_t`` already carries its
config weight (``model.loss_decode.<task>.loss_weight``): a balancer's weight
multiplies it.

Distributed training: a balancer's state must be identical on every rank, or
the ranks optimise different objectives. Learnable state (a ``nn.Parameter``)
stays identical because DDP all-reduces its gradient like any other; state
updated from loss values (buffers) is updated from losses all-reduced across
the ranks first (:func:`all_reduce_mean`, :func:`all_reduce_sum`). Buffers are
persistent, so they are saved in the checkpoint and a resumed run continues
with the same weights.
"""
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

#: Key prefix of everything a balancer adds to the segmentor's loss dict.
BALANCE_PREFIX = 'balance.'


def distributed_world_size() -> int:
    """The number of ranks when ``torch.distributed`` is initialised, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The element-wise sum of ``tensor`` over all ranks (a copy; ``tensor`` itself unchanged)."""
    reduced = tensor.detach().clone()
    if distributed_world_size() > 1:
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The element-wise mean of ``tensor`` over all ranks (a copy; ``tensor`` itself unchanged)."""
    world_size = distributed_world_size()
    reduced = all_reduce_sum(tensor)
    return reduced / world_size if world_size > 1 else reduced


def task_loss_keys(losses: Mapping[str, Tensor], tasks: Sequence[str], owner: str,
                   only_task_losses: bool = False) -> Dict[str, List[str]]:
    """``{task: [keys]}``: the entries of a loss dict that make up each task's loss.

    A task's entries are those whose key starts with ``'{task}.'`` and contains
    ``loss`` (what ``parse_losses`` sums).

    Args:
        losses: A segmentor loss dict ``{'{task}.{name}': value}``.
        tasks: The tasks; each needs at least one entry.
        owner: Who asks (named in the errors).
        only_task_losses: Also refuse summed entries (``loss`` in the key)
            that belong to no task, which a gradient-level balancer could not
            attribute to a task.

    Raises:
        KeyError: A task without loss entries, or (``only_task_losses``) an
            entry of no task.
    """
    grouped = {task: [key for key in losses if key.startswith(f'{task}.') and 'loss' in key] for task in tasks}
    missing = [task for task, keys in grouped.items() if not keys]
    if missing:
        raise KeyError(f'{owner}: no loss entries for task(s) {missing} in the loss dict (keys: '
                       f"{sorted(losses)}); each task needs at least one '{{task}}.loss_*' entry")
    if only_task_losses:
        claimed = {key for keys in grouped.values() for key in keys}
        stray = sorted(key for key in losses if 'loss' in key and key not in claimed)
        if stray:
            raise KeyError(f'{owner}: the loss entries {stray} belong to no task ({list(tasks)}); a gradient-level '
                           "balancer back-propagates each task's loss separately and cannot place them; name "
                           "them '{task}.loss_*' or drop 'loss' from their names")
    return grouped


def group_task_losses(losses: Mapping[str, Tensor], tasks: Sequence[str], owner: str,
                      only_task_losses: bool = False) -> Dict[str, Tensor]:
    """``{task: L_t}``, each the sum of the task's entries (:func:`task_loss_keys`)."""
    grouped = task_loss_keys(losses, tasks, owner, only_task_losses)
    return {task: sum(losses[key] for key in keys) for task, keys in grouped.items()}


def unit_weights(task_losses: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Weight 1 for every task, each a 0-d tensor of its loss's dtype and device (the losses as configured)."""
    return {task: torch.ones((), dtype=loss.dtype, device=loss.device) for task, loss in task_losses.items()}


class LossBalancer(nn.Module):
    """Base class: weigh the per-task losses of a step.

    Subclasses implement :meth:`task_weights`; :meth:`forward` (per-task
    losses) and :meth:`weigh_loss_dict` (the segmentor's flat loss dict) both
    call it exactly once per step, so a stateful balancer advances its state
    once per training step. Stateful updates happen in training mode only
    (``self.training``), so evaluating losses in eval mode leaves the state
    unchanged.

    ``kind`` says where a balancer acts: ``'loss'`` balancers only rescale
    loss values (one backward pass, as without a balancer). Gradient-level
    methods (:mod:`.gradient`: PCGrad, MGDA, CAGrad, Aligned-MTL, UPGrad)
    set ``kind = 'gradient'``: the segmentor's loss dict stays unweighted and
    the training step (:func:`.gradient_step.balanced_update`) back-propagates
    each task's loss separately.

    Args:
        tasks: The segmentor's tasks, in order; every step must give a loss
            for each of them.
    """

    kind = 'loss'

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        tasks = tuple(tasks)
        if not tasks or len(set(tasks)) != len(tasks) or not all(isinstance(t, str) for t in tasks):
            raise ValueError(f'{type(self).__name__}(tasks=...) needs distinct task names, got {list(tasks)}')
        self.tasks = tasks

    # ------------------------------------------------------------ to implement
    def task_weights(self, task_losses: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """The weight of each task for this step, and the extra loss terms.

        Args:
            task_losses: ``{task: L_t}``, each a 0-d tensor (attached to the
                graph), for every task in ``self.tasks``.

        Returns:
            ``({task: w_t}, {name: term})``: 0-d weights (attached to the
            graph only when the weights are learnt through the loss, as
            uncertainty weighting's) and extra terms, added to the loss dict
            as ``balance.loss_<name>``.
        """
        raise NotImplementedError

    def extra_log(self) -> Dict[str, Tensor]:
        """Further 0-d tensors to log, ``{name: value}``, logged as ``balance.<name>`` (no ``loss`` in ``name``)."""
        return {}

    def epoch_end(self) -> None:
        """Called by :class:`LossBalancerHook` after every training epoch, on every rank. Default: nothing."""

    # ---------------------------------------------------------------- the API
    def forward(self, task_losses: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """Weigh the per-task losses of one step.

        Args:
            task_losses: ``{task: L_t}``, 0-d tensors, one per task.

        Returns:
            ``(losses, log)``: ``losses`` holds ``{task: w_t·L_t}`` under the
            original keys plus each extra term as ``balance.loss_<name>`` (sum
            them for the objective); ``log`` holds ``balance.weight.<task>``,
            detached 0-d tensors whose names contain no ``loss``.
        """
        self._check_tasks(task_losses, 'task_losses')
        weights, extra = self.task_weights(task_losses)
        losses = {task: weights[task] * task_losses[task] for task in self.tasks}
        losses.update(self._extra_entries(extra))
        return losses, self._log_entries(weights)

    def weigh_loss_dict(self, losses: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Weigh a segmentor loss dict ``{'{task}.{name}': value}`` entry by entry.

        Each task's loss is the sum of its entries whose key starts with
        ``'{task}.'`` and contains ``loss``; every such entry is multiplied by
        the task's weight and keeps its key, so the log keeps its names.
        Entries without ``loss`` in the key (metrics) pass through unchanged.

        Returns:
            The weighted entries, the extra terms (``balance.loss_<name>``) and
            the log entries (``balance.weight.<task>``, no ``loss`` in the
            names, so ``parse_losses`` logs them without summing them).
        """
        grouped = task_loss_keys(losses, self.tasks, type(self).__name__)
        task_losses = {task: sum(losses[key] for key in keys) for task, keys in grouped.items()}
        weights, extra = self.task_weights(task_losses)
        weighted = dict(losses)
        for task, keys in grouped.items():
            for key in keys:
                weighted[key] = weights[task] * losses[key]
        weighted.update(self._extra_entries(extra))
        weighted.update(self._log_entries(weights))
        return weighted

    # ---------------------------------------------------------------- helpers
    def _check_tasks(self, task_losses: Mapping[str, Tensor], name: str) -> None:
        if set(task_losses) != set(self.tasks):
            raise KeyError(f'{type(self).__name__}: {name} has tasks {sorted(task_losses)}, expected exactly '
                           f'{sorted(self.tasks)} (the tasks it was built with)')

    def _stacked(self, task_losses: Mapping[str, Tensor]) -> Tensor:
        """The detached losses as one vector, shape ``(T,)`` in ``self.tasks`` order, in fp32 (fp64 stays fp64)."""
        values = [task_losses[task].detach().reshape(()) for task in self.tasks]
        dtype = torch.float64 if any(v.dtype == torch.float64 for v in values) else torch.float32
        return torch.stack([v.to(dtype) for v in values])

    @staticmethod
    def _extra_entries(extra: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        return {f'{BALANCE_PREFIX}loss_{name}': value for name, value in extra.items()}

    def _log_entries(self, weights: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        log = {f'{BALANCE_PREFIX}weight.{task}': weights[task].detach().reshape(()) for task in self.tasks}
        log.update({f'{BALANCE_PREFIX}{name}': value.detach().reshape(()) for name, value in self.extra_log().items()})
        bad = [key for key in log if 'loss' in key]
        if bad:
            raise ValueError(f'{type(self).__name__}: log entries {bad} contain "loss" and would be summed into the '
                             'objective by parse_losses; rename them')
        return log
