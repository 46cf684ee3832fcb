"""The parameter update of a gradient-level balancer: per-task backward passes, all-reduce, combine, step.

:func:`balanced_update` replaces mmengine's ``optim_wrapper.update_params(loss)``
for a model whose ``loss_balancer`` has ``kind == 'gradient'``. It is called
by :meth:`MultiTaskSegmentor.train_step` (one process) and by
:class:`~ditask_mm.engine.GradientBalancingDDP` (DDP, inside ``no_sync``, so
DDP's own gradient all-reduce never runs and the reductions below are the
only ones). One step:

1. **Who shares what** (:func:`parameter_sharing`). The autograd graph of
   each task loss is walked (no computation) to find the trainable
   parameters it reaches, and a parameter whose name declares its tasks
   (``decode_heads.<task>.``, an adapter's ``theta_tasks.<key>`` or
   ``lora_tasks_A.<key>``, ``<key>`` a task or a ``+``-joined task group) is
   kept to those tasks: DiTASK's batched spectra compute every θ of a step in
   one call, so every task's graph passes through every task's θ, with a
   gradient that is exactly zero outside its own tasks. A parameter reached by
   one task (its head, its task-specific adapters) is *own*; one reached by
   several tasks (the shared θ, the norms, a task group's θ) is *shared* by
   that set of tasks. Under DDP the reach is OR-ed across ranks.
2. **Per-task gradients of the shared parameters**: one
   ``torch.autograd.grad`` per task, over the shared parameters it reaches
   only, of the loss scaled as ``optim_wrapper.backward`` would scale it
   (gradient accumulation, the AMP loss scale), then unscaled. They form
   one Jacobian row per task.
3. **Own parameters**: one ``optim_wrapper.backward(Σ_t L_t, inputs=own)``;
   each gets its own task's gradient, scaled as mmengine scales it.
4. **DDP**: the Jacobian and the own gradients are all-reduced (mean), so
   every rank combines the same rows; the weights are broadcast from rank 0.
5. **AMP / non-finite gradients**: an inf or NaN in any task's gradient
   skips the step. With a loss scaler (``AmpOptimWrapper``) the combined
   gradient is written as inf, so the scaler itself skips
   ``optimizer.step`` and lowers its scale, exactly as for an overflow in a
   plain backward; without one the step is skipped here.
6. **Combine**: for each set of tasks sharing parameters, the balancer
   combines that set's rows (:meth:`GradientBalancer.combine`); the
   direction, re-scaled by the loss scale, is added to ``.grad``; then
   ``optim_wrapper.step()`` / ``zero_grad()`` when ``should_update()``.

Logged (no ``loss`` in the names): ``balance.weight.<task>`` (the weights of
the largest sharing set, all tasks in every shipped config),
``balance.share.<task>`` (task ``t``'s share ``w_t·g_tᵀd / ‖d‖²`` of the
combined direction; the shares add up to 1), ``balance.<set>.weight.<task>``
for other sets, and ``balance.skipped_step`` (1 when the step was skipped).
"""
import logging
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor

from .base import BALANCE_PREFIX, all_reduce_mean, distributed_world_size, group_task_losses


def reached_parameters(losses: Sequence[Tensor], index: Mapping[int, int]) -> List[Set[int]]:
    """For each loss, the positions (values of ``index``, keyed by ``id(param)``) of the parameters it depends on.

    Walks the autograd graph from each ``loss.grad_fn`` to its
    ``AccumulateGrad`` leaves; nothing is computed. Each graph node is visited
    once for all the losses together: a node's set (a bit mask) is the union of
    its inputs' sets, computed in post-order.
    """
    masks: Dict[object, int] = {}
    for loss in losses:
        stack = [(loss.grad_fn, False)]
        while stack:
            node, inputs_done = stack.pop()
            if node is None or node in masks:
                continue
            if not inputs_done:
                stack.append((node, True))
                stack.extend((next_node, False) for next_node, _ in node.next_functions
                             if next_node is not None and next_node not in masks)
                continue
            variable = getattr(node, 'variable', None)
            mask = 1 << index[id(variable)] if variable is not None and id(variable) in index else 0
            for next_node, _ in node.next_functions:
                if next_node is not None:
                    mask |= masks[next_node]
            masks[node] = mask
    result = []
    for loss in losses:
        mask = masks.get(loss.grad_fn, 0)
        result.append({position for position in range(mask.bit_length()) if mask >> position & 1})
    return result


def declared_tasks(name: str, tasks: Sequence[str]) -> Optional[Set[str]]:
    """The tasks a parameter's name says it belongs to, or ``None`` when it says none.

    ``decode_heads.<task>.…`` belongs to ``<task>``; a name with a part that
    contains ``tasks`` followed by a key (``theta_tasks.sal``,
    ``lora_tasks_A.semseg+human_parts``) to the tasks of the key, when they
    are all in ``tasks``.
    """
    parts = name.split('.')
    if len(parts) > 1 and parts[0] == 'decode_heads' and parts[1] in tasks:
        return {parts[1]}
    for part, key in zip(parts, parts[1:]):
        members = key.split('+')
        if 'tasks' in part and all(member in tasks for member in members):
            return set(members)
    return None


def parameter_sharing(model: nn.Module, task_losses: Mapping[str, Tensor],
                      tasks: Sequence[str]) -> Tuple[List[nn.Parameter], List[List[bool]]]:
    """The trainable parameters of ``model`` and which task losses reach each (step 1 of the module docstring).

    Returns:
        ``(params, reach)``: the trainable parameters in ``model.parameters()``
        order, and ``reach[t][p]``, whether task ``tasks[t]`` reaches
        parameter ``p`` (OR-ed over the ranks under DDP).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    index = {id(p): i for i, p in enumerate(params)}
    owners = [declared_tasks(name, tasks) for name, _ in named]
    reach = [[position in positions and (owners[position] is None or task in owners[position])
              for position in range(len(params))]
             for task, positions in zip(tasks, reached_parameters([task_losses[task] for task in tasks], index))]
    if distributed_world_size() > 1:
        reduced = torch.tensor(reach, dtype=torch.float32, device=task_losses[tasks[0]].device)
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
        reach = (reduced > 0).tolist()
    return params, reach


def _sharing_sets(reach: List[List[bool]], tasks: Sequence[str]) -> Dict[Tuple[str, ...], List[int]]:
    """``{tasks sharing: [parameter positions]}`` from the ``T × P`` reach matrix; one-task sets are own."""
    sets: Dict[Tuple[str, ...], List[int]] = defaultdict(list)
    for position in range(len(reach[0])):
        sharing = tuple(task for t, task in enumerate(tasks) if reach[t][position])
        if sharing:
            sets[sharing].append(position)
    return dict(sets)


def _flat(tensors: Sequence[Optional[Tensor]], like: Sequence[Tensor]) -> Tensor:
    """One vector of ``tensors`` (``None`` as zeros shaped as ``like``)."""
    return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(tensors, like)])


def _add_to_grads(params: Sequence[nn.Parameter], flat: Tensor) -> None:
    offset = 0
    for param in params:
        piece = flat[offset:offset + param.numel()].view_as(param).to(param.dtype)
        offset += param.numel()
        if param.grad is None:
            param.grad = piece.clone()
        else:
            param.grad.add_(piece)


def _all_finite(tensors: Sequence[Optional[Tensor]]) -> bool:
    """Whether every element of every tensor is finite (``None`` skipped), with one device synchronisation."""
    checks = [torch.isfinite(t).all() for t in tensors if t is not None and t.numel()]
    return bool(torch.stack(checks).all()) if checks else True


def balanced_update(model: nn.Module, losses: Dict[str, Tensor], optim_wrapper) -> Dict[str, Tensor]:
    """Update the parameters of ``model`` from its loss dict with its gradient-level balancer.

    Args:
        model: The bare model (not the DDP wrapper), with ``loss_balancer``
            (a :class:`~.gradient.GradientBalancer`) and ``parse_losses``.
        losses: The loss dict of the step (``'{task}.{name}'`` entries, still
            attached to the graph).
        optim_wrapper: mmengine's ``OptimWrapper`` or ``AmpOptimWrapper``.

    Returns:
        The log variables: ``parse_losses``' plus the ``balance.*`` entries
        of the module docstring.
    """
    balancer = model.loss_balancer
    tasks = balancer.tasks
    task_losses = group_task_losses(losses, tasks, type(balancer).__name__, only_task_losses=True)
    _, log_vars = model.parse_losses(losses)
    params, reach = parameter_sharing(model, task_losses, tasks)
    device = task_losses[tasks[0]].device
    sets = _sharing_sets(reach, tasks)
    own = sorted(p for sharing, positions in sets.items() if len(sharing) == 1 for p in positions)
    shared_sets = {sharing: positions for sharing, positions in sets.items() if len(sharing) > 1}
    if not own:
        raise RuntimeError(f'{type(balancer).__name__}: no trainable parameter belongs to one task alone (no '
                           'trainable head?); a gradient-level balancer needs the heads trainable')
    shared = sorted(p for positions in shared_sets.values() for p in positions)
    scaler = getattr(optim_wrapper, 'loss_scaler', None)
    has_scaler = scaler is not None and scaler.is_enabled()
    loss_scale = float(scaler.get_scale()) if has_scaler else 1.0

    # per-task gradients of the shared parameters (unscaled), one Jacobian row each
    rows = []
    for t, task in enumerate(tasks):
        wanted = [p for p in shared if reach[t][p]]
        scaled = optim_wrapper.scale_loss(task_losses[task]) * loss_scale
        grads = torch.autograd.grad(scaled, [params[p] for p in wanted], retain_graph=True,
                                    allow_unused=True) if wanted else ()
        by_position = dict(zip(wanted, grads))
        rows.append(_flat([by_position.get(p) for p in shared], [params[p] for p in shared]) / loss_scale)
    jacobian = torch.stack(rows) if shared else torch.zeros(len(tasks), 0, device=device)

    # own parameters: one ordinary backward (scaled by the wrapper, as mmengine's update_params does)
    own_params = [params[p] for p in own]
    optim_wrapper.backward(optim_wrapper.scale_loss(sum(task_losses.values())), inputs=own_params)
    if distributed_world_size() > 1:  # one flat copy of the own gradients, for one all-reduce
        jacobian = all_reduce_mean(jacobian)
        own_grads = all_reduce_mean(_flat([p.grad for p in own_params], own_params))
        for param, reduced in zip(own_params, torch.split(own_grads, [p.numel() for p in own_params])):
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            param.grad.copy_(reduced.view_as(param))

    finite = _all_finite([jacobian, *(p.grad for p in own_params)])
    log_vars[f'{BALANCE_PREFIX}skipped_step'] = torch.tensor(0.0 if finite else 1.0)
    starts, offset = {}, 0
    for p in shared:  # the Jacobian's columns: the shared parameters' elements, in ``shared`` order
        starts[p], offset = offset, offset + params[p].numel()
    largest = max(shared_sets, key=len) if shared_sets else None
    for sharing, positions in shared_sets.items():
        cols = torch.cat([torch.arange(starts[p], starts[p] + params[p].numel()) for p in positions])
        cols = cols.to(jacobian.device)
        block = jacobian[[tasks.index(task) for task in sharing]][:, cols]
        if finite:
            direction, weights = balancer.combine(block)
            _log_weights(log_vars, sharing, weights, block, sharing == largest)
        else:  # for the scaler to find: it skips optimizer.step and lowers its scale
            direction = torch.full((block.shape[1],), float('inf'), device=block.device, dtype=block.dtype)
        _add_to_grads([params[p] for p in positions], direction * loss_scale)

    if not finite and not has_scaler:
        print_log(f'{type(balancer).__name__}: a task gradient is inf or NaN; the step is skipped and the '
                  'gradients accumulated so far are dropped', logger='current', level=logging.WARNING)
        optim_wrapper.zero_grad()
        return log_vars
    if optim_wrapper.should_update():
        optim_wrapper.step()
        optim_wrapper.zero_grad()
    return log_vars


def _log_weights(log_vars: Dict[str, Tensor], sharing: Sequence[str], weights: Tensor, block: Tensor,
                 main: bool) -> None:
    """The weights and the shares ``w_t·g_tᵀd / ‖d‖²`` (``d = wᵀJ``) of one sharing set, into ``log_vars``."""
    prefix = f'{BALANCE_PREFIX}' if main else f'{BALANCE_PREFIX}{"+".join(sharing)}.'
    combined = weights.double() @ block.double()
    inner = block.double() @ combined
    total = float(combined.pow(2).sum())
    for i, task in enumerate(sharing):
        log_vars[f'{prefix}weight.{task}'] = weights[i].detach().float().cpu()
        if main:
            share = weights[i].double() * inner[i] / total if total > 0 else torch.zeros((), dtype=torch.float64)
            log_vars[f'{prefix}share.{task}'] = share.float().cpu()
