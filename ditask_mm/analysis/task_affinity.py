"""Gradient affinity between tasks, per backbone stage, and the task groups it suggests.

Two tasks help each other at a stage when their loss gradients on the stage's
shared parameters point the same way. :func:`gradient_affinity` gives, for one
batch, each stage's ``T × T`` matrix of cosines ``cos(g_t, g_t')`` (gradients
averaged over the ranks first under ``torch.distributed``);
:func:`measure_task_affinity` averages it over training batches (``E[cos]``)
and :func:`propose_groups` clusters the tasks into the backbone's ``task_groups``
(:class:`~ditask_mm.models.backbones.MultiTaskSwinTransformer`); CLI: ``tools/analysis_tools/task_affinity.py``.
"""
import itertools
import json
import logging
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor

from ..adapters import adapter_layers
from ..fileio import atomic_write_text
from ..visualization.affinity_plot import plot_affinity
from .parameters import adapter_group_key

_STAGE = re.compile(r'^stages\.(\d+)\.')
#: ``StageParameters.source``: the stage's shared adapter parameters, or (no adapters) all its trainable ones.
ADAPTERS, ALL_TRAINABLE = 'adapters', 'all_trainable'


class StageParameters(list):
    """A stage's ``[(name, parameter)]`` used for the affinity, with where they came from in ``source``."""

    def __init__(self, named: Iterable[Tuple[str, nn.Parameter]], source: str):
        super().__init__(named)
        self.source = source


def stage_shared_parameters(backbone: nn.Module) -> Dict[int, StageParameters]:
    """Each stage's shared trainable adapter parameters (named ``stages.{i}.…`` in ``backbone``).

    Those are the adapter parameters (:func:`ditask_mm.adapters.adapter_layers`)
    whose first name part has no ``tasks`` (``theta_shared``, ``lora_A``,
    ``lora_shared_A``; not ``theta_tasks.sal``, ``lora_tasks_A.semseg+sal``)
    and that require gradients. A stage without any (full fine-tuning) takes
    all its trainable parameters instead (``source='all_trainable'``; a frozen
    stage's list is empty).

    Raises:
        ValueError: No parameter of ``backbone`` is named ``stages.{i}.…``.
    """
    names = {n: int(m.group(1)) for n, _ in backbone.named_parameters() if (m := _STAGE.match(n))}
    if not names:
        raise ValueError(f'{type(backbone).__name__} has no parameter named stages.<i>.…; expected a Swin-like '
                         'backbone (pass model.backbone, not the segmentor)')
    shared: Dict[int, List[Tuple[str, nn.Parameter]]] = {i: [] for i in sorted(set(names.values()))}
    for layer_name, layer in adapter_layers(backbone):
        if (match := _STAGE.match(f'{layer_name}.')) is not None:
            shared[int(match.group(1))] += [(f'{layer_name}.{n}', p) for n, p in layer.adapter_parameters()
                                            if adapter_group_key(n) is None and p.requires_grad]
    return {stage: StageParameters(named, ADAPTERS) if named else StageParameters(
        [(n, p) for n, p in backbone.named_parameters() if names.get(n) == stage and p.requires_grad], ALL_TRAINABLE)
        for stage, named in shared.items()}


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mean_over_ranks(tensor: Tensor) -> Tensor:
    """``tensor`` averaged over the ranks of the default process group (all-reduce)."""
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / dist.get_world_size()


def cosine_matrix(gradients: Tensor) -> Tensor:
    """``(T, P)`` gradients → ``(T, T)`` float64 cosines; a zero gradient's row, column and diagonal are 0."""
    gradients = gradients.double()
    norms = gradients.norm(dim=1)
    unit = gradients / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None]
    return (unit @ unit.T).clamp(-1.0, 1.0)


def gradient_affinity(task_losses: Mapping[str, Tensor], params_by_stage: Mapping[int, Sequence[nn.Parameter]],
                      reduce: Optional[Callable[[Tensor], Tensor]] = None) -> Dict[int, Tensor]:
    """Per stage, the ``T × T`` cosines between the tasks' loss gradients on that stage's parameters, for one batch.

    One ``torch.autograd.grad`` per task over all the given parameters
    (``retain_graph=True``, nothing goes into ``.grad``; a parameter the task
    does not reach counts as 0). Each stage's ``(T, P)`` flattened gradients
    are averaged over the ranks (``reduce``) before the cosines: under DDP
    every rank gets the cosines of the global batch, not a mean of per-rank ones.

    Args:
        task_losses: ``{task: scalar loss}``; the matrices follow its order.
        params_by_stage: ``{stage: [parameters]}`` (none: a zero matrix).
        reduce: Maps a tensor to its mean over the ranks. ``None``:
            :func:`mean_over_ranks` when ``torch.distributed`` is initialised
            with more than one rank, else no reduction.

    Returns:
        ``{stage: (T, T) float64}``. A task whose (reduced) gradient is zero
        has cosine 0 with every task, itself included, and a warning is logged.

    Raises:
        FloatingPointError: A gradient is NaN or infinite (the same on every
            rank, since it is checked after the reduction).
    """
    tasks = list(task_losses)
    stages = sorted(params_by_stage)
    flat_params = [p for s in stages for p in params_by_stage[s]]
    if reduce is None and _world_size() > 1:
        reduce = mean_over_ranks
    per_task = []
    for task in tasks:
        loss = task_losses[task]
        grads = [None] * len(flat_params)
        if flat_params and loss.requires_grad:
            grads = torch.autograd.grad(loss, flat_params, retain_graph=True, allow_unused=True)
        per_task.append([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(flat_params, grads)])
    matrices, start, empty = {}, 0, (flat_params[0].new_zeros(0) if flat_params else torch.zeros(0))
    for stage in stages:
        count = len(params_by_stage[stage])
        stacked = torch.stack([torch.cat([empty, *grads[start:start + count]]) for grads in per_task])
        start += count
        if reduce is not None:
            stacked = reduce(stacked)
        if not torch.isfinite(stacked).all():
            bad = [t for t, row in zip(tasks, stacked) if not torch.isfinite(row).all()]
            raise FloatingPointError(f'stage {stage}: the gradient of task(s) {bad} is NaN or infinite; check those '
                                     'losses (learning rate, inputs) before measuring affinity')
        zero = [t for t, row in zip(tasks, stacked) if not row.any()]
        if zero:
            print_log(f'[task affinity] stage {stage}: zero gradient for task(s) {zero}; their cosines are 0 in '
                      'this batch', logger='current', level=logging.DEBUG)  # measure_task_affinity sums them up
        matrices[stage] = cosine_matrix(stacked).cpu()
    return matrices


def task_loss_sums(losses: Mapping[str, Tensor], tasks: Sequence[str]) -> Dict[str, Tensor]:
    """``{task: sum of the '{task}.…' entries whose name contains 'loss'}`` of a segmentor's loss dict."""
    sums = {}
    for task in tasks:
        parts = [v for k, v in losses.items() if k.startswith(f'{task}.') and 'loss' in k.split('.', 1)[1]]
        if not parts:
            raise KeyError(f'the model returned no loss for task {task!r} (keys: {sorted(losses)}); expected '
                           f"'{task}.loss_…' entries from model.loss")
        sums[task] = sum(v.sum() for v in parts)
    return sums


@dataclass
class AffinityResult:
    """Affinity matrices averaged over batches, with what they were measured on.

    Attributes:
        tasks: Row and column order of the matrices.
        matrices: ``{stage: (T, T) float64}``, the mean of the per-batch cosines.
        parameters: ``{stage: {'parameters': 'adapters' | 'all_trainable',
            'num_parameters': int, 'parameter_names': [str]}}``.
        iterations: Batches measured (per rank); ``world_size``: ranks averaged.
        zero_gradient_batches: ``{stage: {task: batches with a zero gradient}}``;
            ``frozen_stages``: stages left out (no trainable parameter).
    """
    tasks: List[str]
    matrices: Dict[int, Tensor]
    parameters: Dict[int, Dict[str, Any]]
    iterations: int
    world_size: int
    zero_gradient_batches: Dict[int, Dict[str, int]] = field(default_factory=dict)
    frozen_stages: List[int] = field(default_factory=list)


def _cycle(dataloader: Iterable) -> Iterable:
    """Batches of ``dataloader`` epoch after epoch (``sampler.set_epoch`` between them, when it has one)."""
    for epoch in itertools.count(1):
        count = 0
        for count, batch in enumerate(dataloader, 1):
            yield batch
        if not count:
            raise ValueError('the dataloader yields no batch; check the train dataset (data_root, ann_file)')
        if hasattr(getattr(dataloader, 'sampler', None), 'set_epoch'):
            dataloader.sampler.set_epoch(epoch)


def measure_task_affinity(model: nn.Module, dataloader: Iterable, iters: int, tasks: Optional[Sequence[str]] = None,
                          reduce: Optional[Callable[[Tensor], Tensor]] = None,
                          log_interval: int = 5) -> AffinityResult:
    """Average :func:`gradient_affinity` over ``iters`` training batches of a segmentor.

    Each pair's cosine is averaged over the batches in which both tasks have a
    non-zero gradient (a batch with no human-parts labels gives that task
    none); a pair that never has one gets 0.

    Per batch, in train mode: ``model.loss(**model.data_preprocessor(batch,
    training=True))``, a task's loss the sum of its ``'{task}.…loss…'`` entries.
    No optimizer step: parameters and ``.grad`` are untouched; persistent
    buffers (BatchNorm statistics) and the train/eval mode are put back. The
    dataloader is cycled when ``iters`` exceeds its length.

    Args:
        model: A segmentor (``backbone``, ``data_preprocessor``, ``loss``), not
            DDP-wrapped: the ranks are combined through ``reduce``.
        dataloader: Training batches; ``iters``: how many (per rank, ≥ 1).
        tasks: Task order of the matrices; ``model.tasks`` by default.
        reduce: See :func:`gradient_affinity`.
        log_interval: Log progress every this many batches (and at the last).
    """
    if iters < 1:
        raise ValueError(f'iters must be at least 1, got {iters}')
    tasks = list(tasks if tasks is not None else model.tasks)
    stage_params = stage_shared_parameters(model.backbone)
    frozen = [s for s, named in stage_params.items() if not named]
    if frozen:
        print_log(f'[task affinity] stage(s) {frozen}: no trainable parameter, left out', logger='current', level=30)
    stage_params = {s: named for s, named in stage_params.items() if named}
    if not stage_params:
        raise ValueError('no backbone stage has trainable parameters; task affinity needs the gradients of trainable '
                         'backbone parameters (adapters or fine-tuned weights)')
    params_by_stage = {s: [p for _, p in named] for s, named in stage_params.items()}
    sums = {s: torch.zeros(len(tasks), len(tasks), dtype=torch.float64) for s in stage_params}
    counts = {s: torch.zeros(len(tasks), len(tasks), dtype=torch.float64) for s in stage_params}
    zero = {s: {t: 0 for t in tasks} for s in stage_params}
    persistent = model.state_dict().keys()  # BN statistics; caches (SVD factors) are non-persistent, left alone
    buffers = {n: b.detach().clone() for n, b in model.named_buffers() if n in persistent}
    was_training = model.training
    model.train()
    try:
        for i, batch in enumerate(_cycle(dataloader), 1):
            data = model.data_preprocessor(batch, training=True)
            losses = task_loss_sums(model.loss(**data), tasks)
            for stage, matrix in gradient_affinity(losses, params_by_stage, reduce).items():
                sums[stage] += matrix
                has_gradient = (matrix.diagonal() != 0).to(torch.float64)
                counts[stage] += torch.outer(has_gradient, has_gradient)
                for t, task in enumerate(tasks):
                    zero[stage][task] += int(matrix[t, t] == 0)
            del data, losses
            if i % log_interval == 0 or i == iters:
                print_log(f'[task affinity] batch {i}/{iters}', logger='current')
            if i == iters:
                break
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, buffer in ((n, b) for n, b in model.named_buffers() if n in buffers):
                buffer.copy_(buffers[name])
    parameters = {s: dict(parameters=named.source, num_parameters=sum(p.numel() for _, p in named),
                          parameter_names=[n for n, _ in named]) for s, named in stage_params.items()}
    # E[cos] over the batches where both tasks have a gradient (a batch without a task's labels has none)
    matrices = {s: m / counts[s].clamp_min(1) for s, m in sums.items()}
    without = sorted({(task, n) for per_task in zero.values() for task, n in per_task.items() if n})
    if without:
        print_log('[task affinity] batches without a gradient (no labels of the task, or a zero loss), left out of '
                  'its averages: ' + ', '.join(f'{task} {n}/{iters}' for task, n in without),
                  logger='current', level=logging.WARNING)
    return AffinityResult(tasks=tasks, matrices=matrices, parameters=parameters,
                          iterations=iters, world_size=_world_size(), zero_gradient_batches=zero, frozen_stages=frozen)


def propose_groups(affinity: Any, tasks: Sequence[str], num_groups: Optional[int] = None,
                   threshold: Optional[float] = None,
                   parent_groups: Optional[Sequence[Sequence[str]]] = None) -> List[List[str]]:
    """Group tasks by agglomerative clustering, average linkage on the distance ``1 − affinity``.

    From one group per task, the two groups of highest average pairwise
    affinity are merged until ``num_groups`` remain or the best merge's average
    is below ``threshold``, whichever comes first (neither given:
    ``threshold=0``). Ties go to the pair first in ``tasks`` order.

    Args:
        affinity: ``(T, T)`` matrix (tensor, array, lists) in ``tasks`` order.
        tasks: Task names.
        num_groups: Stop at this many groups (1 to ``T``).
        threshold: Do not merge groups whose average affinity is below it.
        parent_groups: A partition of ``tasks`` (the previous stage's groups in
            ``branch_mode='tree'``) never merged across: the result refines it.

    Returns:
        The groups ordered by their first task in ``tasks`` order, each in
        ``tasks`` order.
    """
    tasks = list(tasks)
    matrix = torch.as_tensor(affinity, dtype=torch.float64)
    if matrix.shape != (len(tasks), len(tasks)):
        raise ValueError(f'affinity has shape {tuple(matrix.shape)}, expected ({len(tasks)}, {len(tasks)}) for '
                         f'tasks {tasks}')
    matrix = (matrix + matrix.T) / 2
    if num_groups is not None and not 1 <= num_groups <= len(tasks):
        raise ValueError(f'num_groups={num_groups}: expected 1 to {len(tasks)} (the number of tasks)')
    if num_groups is None and threshold is None:
        threshold = 0.0
    parent = [0] * len(tasks)
    if parent_groups is not None:
        from ..models.backbones.task_groups import normalise_groups
        normalise_groups([parent_groups], tasks, num_stages=1)
        parent = [next(g for g, group in enumerate(parent_groups) if t in group) for t in tasks]
    clusters = [[i] for i in range(len(tasks))]
    while len(clusters) > (num_groups or 1):
        pairs = [(a, b) for a in range(len(clusters)) for b in range(a + 1, len(clusters))
                 if parent[clusters[a][0]] == parent[clusters[b][0]]]
        if not pairs:  # only tasks of different parent groups are left apart
            if num_groups is not None:
                print_log(f'[task affinity] {len(clusters)} groups, not {num_groups}: tasks of different parent '
                          f'groups {[list(g) for g in parent_groups]} are never merged', logger='current', level=30)
            break
        # average linkage; max() keeps the first of equal scores, so ties go to the earliest pair
        score, a, b = max(((matrix[clusters[a]][:, clusters[b]].mean().item(), a, b) for a, b in pairs),
                          key=lambda candidate: candidate[0])
        if threshold is not None and score < threshold:
            break
        clusters[a] = sorted(clusters[a] + clusters.pop(b))
    return [[tasks[i] for i in c] for c in sorted(clusters, key=lambda c: c[0])]


def propose_stage_groups(result: AffinityResult, num_groups: Sequence[Optional[int]],
                         thresholds: Sequence[Optional[float]],
                         branch_mode: str = 'side') -> Dict[int, List[List[str]]]:
    """:func:`propose_groups` for every stage of ``result``, in stage order.

    ``num_groups`` and ``thresholds`` have one entry per stage (``None``: not
    set; neither set means threshold 0). In ``'tree'`` mode each stage's
    groups refine the previous stage's. A stage without trainable parameters
    (``frozen_stages``) keeps one group (the previous stage's in a tree).
    """
    stages = sorted([*result.matrices, *result.frozen_stages])
    groups: Dict[int, List[List[str]]] = {}
    parent = None
    for stage, count, threshold in zip(stages, num_groups, thresholds):
        if stage in result.frozen_stages:
            groups[stage] = [list(g) for g in parent] if parent else [list(result.tasks)]
        else:
            groups[stage] = propose_groups(result.matrices[stage], result.tasks, num_groups=count,
                                           threshold=threshold, parent_groups=parent)
        parent = groups[stage] if branch_mode == 'tree' else None
    return groups


def check_task_groups(task_groups: Sequence[Sequence[Sequence[str]]], branch_mode: str) -> None:
    """Check ``task_groups`` as the backbone will (one partition per stage; in ``'tree'`` mode, refinements)."""
    if not task_groups or isinstance(task_groups[0], str):
        raise ValueError(f'task_groups={task_groups!r}: expected one explicit partition of the tasks per stage')
    from ..models.backbones.task_groups import plan_streams
    tasks = [t for g in task_groups[0] for t in g]
    plan_streams(tasks, [1] * len(task_groups), task_groups, branch_depth=1, branch_mode=branch_mode)


def affinity_report(result: AffinityResult, groups: Mapping[int, List[List[str]]],
                    metadata: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The content of ``affinity.json``: tasks, run facts, and per stage matrix, parameters and groups."""
    stages = [dict(stage=stage, matrix=[[round(v, 6) for v in row] for row in result.matrices[stage].tolist()],
                   **result.parameters[stage], zero_gradient_batches=result.zero_gradient_batches[stage],
                   groups=groups.get(stage)) for stage in sorted(result.matrices)]
    return dict(**dict(metadata or {}), tasks=result.tasks, iterations=result.iterations,
                world_size=result.world_size, stages=stages)


def write_affinity_outputs(result: AffinityResult, out_dir: str, groups: Mapping[int, List[List[str]]],
                           metadata: Optional[Mapping[str, Any]] = None) -> Tuple[str, str]:
    """Write ``affinity.json`` (:func:`affinity_report`) and ``affinity.png`` into ``out_dir``; return their paths."""
    json_path, png_path = osp.join(out_dir, 'affinity.json'), osp.join(out_dir, 'affinity.png')
    atomic_write_text(json.dumps(affinity_report(result, groups, metadata), indent=1) + '\n', json_path)
    plot_affinity(result.matrices, result.tasks, result.parameters, png_path,
                  title=f'gradient affinity, {result.iterations} batches × {result.world_size} rank(s)')
    return json_path, png_path


def write_group_config(path: str, base_config: str, task_groups: Sequence[Sequence[Sequence[str]]],
                       branch_mode: str, provenance: str = '') -> str:
    """Write (atomically) a config inheriting ``base_config`` with the backbone's ``task_groups`` and ``branch_mode``.

    ``_base_`` names ``base_config`` relative to the written file's folder
    when possible (else absolutely). ``task_groups`` has one partition of the
    tasks per stage, each refining the previous one in ``'tree'`` mode;
    ``provenance`` (command, iterations) becomes the comment lines on top.
    Returns ``path``.
    """
    check_task_groups(task_groups, branch_mode)
    folder = osp.dirname(osp.abspath(path))
    try:
        base = osp.relpath(osp.abspath(base_config), folder)
    except ValueError:  # another drive (Windows): no relative path
        base = osp.abspath(base_config)
    groups = [[list(g) for g in stage] for stage in task_groups]
    comment = ''.join(f'# {line}\n' for line in (provenance.splitlines() or ['task groups from gradient affinity']))
    text = (f'{comment}_base_ = [{base!r}]\n'
            f'model = dict(backbone=dict(task_groups={groups!r}, branch_mode={branch_mode!r}))\n')
    atomic_write_text(text, path)
    return path
