"""One task list per run: copy the config's top-level ``tasks`` to every part that needs it.

A config declares its tasks once, as the top-level ``tasks = [...]`` (the
dataset bases ``configs/_base_/datasets/*.py`` do). The model, every
dataloader's dataset and the evaluators take the same list; this module fills
it in where it is unset and refuses a part that names other tasks, at build
time, before any iteration, with a message naming both lists and their
config keys. So ``--cfg-options "tasks=['semseg','sal']"`` changes the whole
run, and a mismatch cannot surface as a missing prediction after the first
epoch.
"""
import inspect
from typing import Any, Iterator, List, Optional, Tuple

from mmengine.config import Config

from ..tasks import check_tasks

#: Where a site's list comes from, for the error message.
TOP_LEVEL = 'tasks'
_FIX = 'set the task list once, in tasks=[...]'


def _takes_tasks(registry: Any, node: Any) -> bool:
    """Whether the type of the config ``node`` has a ``tasks`` argument (unknown types: no)."""
    if not isinstance(node, dict) or 'type' not in node:
        return False
    cls = node['type']
    if isinstance(cls, str):
        try:
            cls = registry.get(cls)
        except KeyError:
            cls = None
    if cls is None:
        return False
    try:
        return 'tasks' in inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no introspectable signature
        return False


def _dataset_sites(node: Any, key: str, registry: Any) -> Iterator[Tuple[str, dict, bool]]:
    """``(key, dataset config, takes tasks)`` for a dataset config and the datasets it wraps."""
    if not isinstance(node, dict):
        return
    yield key, node, _takes_tasks(registry, node)
    inner = node.get('dataset')
    if isinstance(inner, dict):
        yield from _dataset_sites(inner, f'{key}.dataset', registry)
    for i, item in enumerate(node.get('datasets') or ()):
        yield from _dataset_sites(item, f'{key}.datasets[{i}]', registry)


def task_sites(cfg: Config) -> List[Tuple[str, dict, bool]]:
    """Every config node that takes or names a task list.

    Returns:
        ``(key, node, takes_tasks)`` for the model, each ``*_dataloader``'s
        dataset (and the datasets of wrappers) and the ``val_evaluator`` /
        ``test_evaluator`` metrics (a dict or a list of dicts). ``key`` is
        the dotted config path of the node, e.g.
        ``'train_dataloader.dataset'``.
    """
    import ditask_mm.datasets  # noqa: F401  (register the types looked up below)
    import ditask_mm.evaluation  # noqa: F401
    import ditask_mm.models  # noqa: F401
    from ..registry import DATASETS, METRICS, MODELS

    sites: List[Tuple[str, dict, bool]] = []
    model = cfg.get('model')
    if isinstance(model, dict):
        sites.append(('model', model, _takes_tasks(MODELS, model)))
    for name in sorted(k for k in cfg.keys() if k.endswith('_dataloader')):
        loader = cfg.get(name)
        if isinstance(loader, dict):
            sites.extend(_dataset_sites(loader.get('dataset'), f'{name}.dataset', DATASETS))
    for name in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(name)
        if isinstance(evaluator, dict):
            evaluator = evaluator.get('metrics', evaluator) if evaluator.get('type') == 'Evaluator' else evaluator
        if isinstance(evaluator, dict):
            sites.append((name, evaluator, _takes_tasks(METRICS, evaluator)))
        elif isinstance(evaluator, (list, tuple)):
            sites.extend((f'{name}[{i}]', metric, _takes_tasks(METRICS, metric)) for i, metric in enumerate(evaluator)
                         if isinstance(metric, dict))
    return [site for site in sites if site[2] or site[1].get('tasks') is not None]


def resolve_tasks(cfg: Config) -> Config:
    """Give the model, the datasets and the evaluators one task list; refuse differing ones.

    With a top-level ``tasks``, every part that takes tasks and sets none
    gets a copy; a part that sets other tasks (a different list or order)
    raises. Without one (older configs), the model's ``tasks`` play that
    role for the parts that set none, and any two differing lists raise.
    Changes ``cfg`` in place; calling it again changes nothing.

    Args:
        cfg: A loaded config, ``--cfg-options`` already merged.

    Returns:
        ``cfg``.

    Raises:
        ValueError: Two task lists differ; the message names both lists and
            their config keys.
        KeyError: A list (the top-level one or a part's) names an unknown task.
    """
    top = cfg.get('tasks')
    sites = task_sites(cfg)
    for key, node, _ in sites:  # an unknown name is reported as such, before any comparison
        if node.get('tasks') is not None:
            check_tasks(node['tasks'], f'{key}.tasks')
    if top is not None:
        reference: Optional[Tuple[str, List[str], str]] = (
            TOP_LEVEL, list(check_tasks(top, "the config's top-level tasks")), ' (config top level)')
    else:
        model_tasks = cfg['model'].get('tasks') if isinstance(cfg.get('model'), dict) else None
        reference = ('model.tasks', list(model_tasks), '') if model_tasks is not None else None
    if reference is None:  # no list to copy: the explicit ones must agree among themselves
        named = [(f'{key}.tasks', list(node['tasks'])) for key, node, _ in sites if node.get('tasks') is not None]
        for key, tasks in named[1:]:
            if tasks != named[0][1]:
                raise ValueError(f'{key} {tasks} differs from {named[0][0]} {named[0][1]}; {_FIX}')
        return cfg
    where, tasks, note = reference
    for key, node, takes_tasks in sites:
        own = node.get('tasks')
        if own is None:
            if takes_tasks:
                node['tasks'] = list(tasks)
        elif list(own) != tasks:
            raise ValueError(f'{key}.tasks {list(own)} differs from {where} {tasks}{note}; {_FIX}')
    return cfg
