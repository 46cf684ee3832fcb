"""Which stream each block of a multi-task Swin runs, from the task groups of each stage.

A *stream* is one path of tokens through the backbone. The shared stream
(key ``None``) is what every task reads where nothing branches. A *group* of
tasks that branches gets its own stream and its own task-specific adapter
parameters, named by its *key*: the task name for a one-task group (so one
task per group gives DiTASK's parameter names, ``theta_tasks.semseg``), the
tasks joined by ``+`` for a larger one (``theta_tasks.semseg+human_parts``).
A group of all tasks is the shared stream itself.

Per stage ``i`` the config gives a partition of the tasks
(``task_groups[i]``) and how many of the stage's last blocks branch
(``branch_depth``). Two modes say where a branch goes next:

* ``'side'`` (DiTASK): the shared stream runs every block and continues into
  the next stage; each group's branch leaves it at the first branched block,
  runs the rest of the stage and feeds only the heads.
* ``'tree'`` (progressive task-specific adaptation): group streams continue
  into the next stage, where they may split further; each stage's partition
  must refine the one before. The shared stream ends where it first splits.

:func:`plan_streams` turns this into a :class:`StagePlan` per stage: for
every block, which streams it produces and which stream each one reads.
A stream is produced only if something reads it, so no adapter parameter is
built that could never get a gradient.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

BRANCH_MODES = ('side', 'tree')
#: What a stage of ``task_groups`` may be instead of a list of groups.
STAGE_SHORTHANDS = ('shared', 'per_task')
#: Joins the tasks of a group into its key.
GROUP_SEPARATOR = '+'
#: ``(output stream, input stream)`` pairs of one block; ``None`` is the shared stream.
Routes = Tuple[Tuple[Optional[str], Optional[str]], ...]
SHARED_ONLY: Routes = ((None, None),)


@dataclass(frozen=True)
class StagePlan:
    """The streams of one stage.

    Attributes:
        groups: The stage's partition of the tasks, each group in task order.
        keys: One stream key per group (``None`` for the group of all tasks).
        routes: Per block, the ``(output, input)`` stream pairs it computes.
        task_keys: Which stream each task's head reads at the end of the stage.
        carry: The streams the next stage starts from (none after the last stage).
    """

    groups: Tuple[Tuple[str, ...], ...]
    keys: Tuple[Optional[str], ...]
    routes: Tuple[Routes, ...]
    task_keys: Dict[str, Optional[str]]
    carry: Tuple[Optional[str], ...]

    @property
    def branches(self) -> bool:
        """Whether any block of the stage runs a stream other than the shared one."""
        return any(r != SHARED_ONLY for r in self.routes)

    def streams_at_end(self) -> Tuple[Optional[str], ...]:
        """The distinct streams the stage's heads or the next stage read, in order."""
        wanted = list(self.carry) + [self.task_keys[t] for t in self.task_keys]
        return tuple(dict.fromkeys(wanted))


def group_key(group: Sequence[str], tasks: Sequence[str]) -> Optional[str]:
    """The stream key of ``group``: ``None`` for all tasks, else its tasks joined by ``+``."""
    if set(group) == set(tasks):
        return None
    return GROUP_SEPARATOR.join(group)


def normalise_groups(task_groups: Sequence[Sequence[Sequence[str]]], tasks: Sequence[str],
                     num_stages: int) -> Tuple[Tuple[Tuple[str, ...], ...], ...]:
    """Check that ``task_groups`` has one partition of ``tasks`` per stage; return it in canonical order.

    A stage may also be given as ``'shared'`` (all tasks in one group) or
    ``'per_task'`` (one task per group), which keeps a config valid when its
    task list changes. Canonical order: tasks within a group, and groups by
    their first task, follow ``tasks``, so that equal partitions give equal
    parameter names.

    Raises:
        ValueError: If the number of stages is wrong, or a stage's groups miss,
            repeat or invent a task, or a group is empty.
    """
    if isinstance(task_groups, (str, bytes)) or len(task_groups) != num_stages:
        raise ValueError(f'task_groups must give one partition of the tasks per stage ({num_stages} stages), '
                         f'got {task_groups!r}; e.g. [[{list(tasks)}]] * {num_stages} shares every stage')
    order = {t: n for n, t in enumerate(tasks)}
    stages = []
    for i, groups in enumerate(task_groups):
        if groups in STAGE_SHORTHANDS:
            groups = [list(tasks)] if groups == 'shared' else [[t] for t in tasks]
        if isinstance(groups, (str, bytes)) or any(isinstance(g, (str, bytes)) for g in groups):
            raise ValueError(f'task_groups[{i}] must be a list of groups (lists of task names), '
                             f"'shared' or 'per_task', got {groups!r}")
        seen = [t for g in groups for t in g]
        unknown = sorted(set(seen) - set(tasks))
        repeated = sorted({t for t in seen if seen.count(t) > 1})
        missing = [t for t in tasks if t not in seen]
        if unknown or repeated or missing or any(len(g) == 0 for g in groups):
            problems = [f'unknown {unknown}' if unknown else '', f'in two groups {repeated}' if repeated else '',
                        f'in no group {missing}' if missing else '',
                        'an empty group' if any(len(g) == 0 for g in groups) else '']
            raise ValueError(f'task_groups[{i}] {[list(g) for g in groups]} is not a partition of the tasks '
                             f'{list(tasks)}: {", ".join(p for p in problems if p)}; every task must be in exactly '
                             'one group of every stage')
        canonical = sorted((tuple(sorted(g, key=order.__getitem__)) for g in groups), key=lambda g: order[g[0]])
        stages.append(tuple(canonical))
    return tuple(stages)


def groups_from_task_stages(task_stages: Sequence[int], tasks: Sequence[str],
                            num_stages: int) -> Tuple[Tuple[Tuple[str, ...], ...], ...]:
    """DiTASK's layout: one task per group in ``task_stages``, all tasks together elsewhere."""
    return tuple(tuple((t,) for t in tasks) if i in task_stages else (tuple(tasks),) for i in range(num_stages))


def branch_depths(branch_depth: Union[int, Sequence[int]], depths: Sequence[int]) -> Tuple[int, ...]:
    """``branch_depth`` as one value per stage, each between 1 and the stage's depth.

    Raises:
        ValueError: If a value is out of range or the list has the wrong length.
    """
    values = [branch_depth] * len(depths) if isinstance(branch_depth, int) else list(branch_depth)
    if len(values) != len(depths):
        raise ValueError(f'branch_depth must be an int or one value per stage ({len(depths)}), got {branch_depth!r}')
    for i, (value, depth) in enumerate(zip(values, depths)):
        if not isinstance(value, int) or not 1 <= value <= depth:
            raise ValueError(f'branch_depth of stage {i} must be an int between 1 and the stage depth {depth}, '
                             f'got {value!r}')
    return tuple(values)


def plan_streams(tasks: Sequence[str], depths: Sequence[int], task_groups, branch_depth: Union[int, Sequence[int]] = 1,
                 branch_mode: str = 'side') -> List[StagePlan]:
    """The :class:`StagePlan` of every stage.

    Args:
        tasks: Task names, in output order.
        depths: Blocks per stage.
        task_groups: Per stage, a partition of ``tasks`` (checked by
            :func:`normalise_groups`).
        branch_depth: How many of a stage's last blocks branch: one int, or
            one per stage.
        branch_mode: ``'side'`` or ``'tree'`` (module docstring).

    Raises:
        ValueError: For an unknown mode, bad groups or depths, or in
            ``'tree'`` mode a stage whose partition does not refine the one
            before (a group would have to merge streams that already split).
    """
    if branch_mode not in BRANCH_MODES:
        raise ValueError(f'branch_mode must be one of {BRANCH_MODES}, got {branch_mode!r}')
    stages = normalise_groups(task_groups, tasks, len(depths))
    counts = branch_depths(branch_depth, depths)
    plans: List[StagePlan] = []
    carry: Tuple[Optional[str], ...] = (None,)
    parent_of: Dict[str, Optional[str]] = {t: None for t in tasks}  # each task's stream entering the stage
    last = len(depths) - 1
    for i, (groups, depth, count) in enumerate(zip(stages, depths, counts)):
        keys = tuple(group_key(g, tasks) for g in groups)
        parents = [{parent_of[t] for t in g} for g in groups]
        if branch_mode == 'tree':
            for group, parent in zip(groups, parents):
                if len(parent) > 1:
                    previous = [list(g) for g in stages[i - 1]]
                    raise ValueError(f"branch_mode='tree': task_groups[{i}] puts {list(group)} in one group, but "
                                     f'they are already in different streams after stage {i - 1} '
                                     f'({previous}); each stage must split the groups of the stage before, '
                                     "never merge them (or use branch_mode='side')")
        if keys == (None,):
            routes: List[Routes] = [SHARED_ONLY] * depth
        else:
            entry: Routes = tuple((p, p) for p in carry)
            first: Routes = tuple((k, next(iter(p))) for k, p in zip(keys, parents))
            if branch_mode == 'side' and i < last:
                first = SHARED_ONLY + first  # the shared stream goes on to the next stage
            then: Routes = tuple((out, out) for out, _ in first)
            start = depth - count
            routes = [entry] * start + [first] + [then] * (count - 1)
        task_keys = {t: k for g, k in zip(groups, keys) for t in g}
        if i == last:
            carry = ()  # nothing follows the last stage
        else:
            carry = (None,) if branch_mode == 'side' else keys
        if branch_mode == 'tree':
            parent_of = dict(task_keys)
        plans.append(StagePlan(groups, keys, tuple(routes), task_keys, carry))
    return plans


def layer_paths(routes: Routes, task_specific: bool) -> Tuple[bool, List[str]]:
    """``(shared, group keys)`` an adapted linear of a block with ``routes`` needs.

    A task-specific layer (``task_layers``) has one adaptation per output
    stream other than the shared one, and a shared one only if the shared
    stream is an output. Any other layer serves every stream with its
    shared adaptation.
    """
    if not task_specific:
        return True, []
    outputs = [out for out, _ in routes]
    return None in outputs, [k for k in outputs if k is not None]
