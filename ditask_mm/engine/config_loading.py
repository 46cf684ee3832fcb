"""Load a config the way ``tools/train.py`` and ``tools/test.py`` both need."""
import argparse
import ast
import copy
import importlib.util
import os.path as osp
from typing import Any, Iterator, List, Mapping, Optional, Sequence

from mmengine.config import Config, DictAction

from .schedule import fit_schedule_to_run_length
from .task_config import resolve_tasks


def _replace_none_parents(cfg: Config, key: str) -> None:
    """Turn ``None`` values on the path of a dotted ``--cfg-options`` key into empty dicts.

    mmengine refuses ``model.backbone.init_cfg.checkpoint=FILE`` when the
    config has ``init_cfg=None`` (a dict cannot be merged into ``None``), and
    its command-line parser has no syntax for a whole dict. Making room lets
    the dotted form work.
    """
    node = cfg
    for part in key.split('.')[:-1]:
        if not isinstance(node, (dict, Config)) or part not in node:
            return
        if node[part] is None:
            node[part] = {}
        node = node[part]


#: Short names accepted in ``vis_backends`` (``--cfg-options vis_backends=local,tensorboard``).
VIS_BACKEND_NAMES = dict(local='LocalVisBackend', tensorboard='TensorboardVisBackend', wandb='WandbVisBackend',
                         mlflow='MLflowVisBackend', clearml='ClearMLVisBackend', dvclive='DVCLiveVisBackend',
                         aim='AimVisBackend', neptune='NeptuneVisBackend')
#: The package each backend imports when the runner builds it, and how to get it.
_BACKEND_PACKAGES = dict(TensorboardVisBackend=('tensorboard', 'pip install -r requirements/optional.txt (or run '
                                                'tools/setup_env.sh, which installs the pinned tensorboard)'),
                         WandbVisBackend=('wandb', 'pip install wandb'),
                         MLflowVisBackend=('mlflow', 'pip install mlflow'),
                         ClearMLVisBackend=('clearml', 'pip install clearml'),
                         DVCLiveVisBackend=('dvclive', 'pip install dvclive'), AimVisBackend=('aim', 'pip install aim'),
                         NeptuneVisBackend=('neptune', 'pip install neptune'))
#: ``visualizer.vis_backends`` as configs/_base_/default_runtime.py sets it (captured from the top-level name).
_DEFAULT_VIS_BACKENDS = [dict(type='LocalVisBackend')]


def _parse_dict_call(text: str, key: str) -> dict:
    """``"dict(type='X', k=1)"`` or ``"{'type': 'X'}"`` (literal values only) as a dict."""
    try:
        node = ast.parse(text.strip(), mode='eval').body
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict' \
                and not node.args and all(kw.arg is not None for kw in node.keywords):
            return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        value = ast.literal_eval(node)
    except (SyntaxError, ValueError):
        raise ValueError(f'{key}: cannot read {text!r} as a backend; write '
                         f'dict(type=\'TensorboardVisBackend\') with literal values, or a short name '
                         f'({", ".join(VIS_BACKEND_NAMES)})') from None
    if not isinstance(value, dict):
        raise ValueError(f'{key}: {text!r} is not a dict; expected dict(type=...) or a short name')
    return value


def normalize_vis_backends(value: Any, key: str = 'vis_backends') -> List[dict]:
    """Turn any accepted spelling of a backend list into a list of config dicts and check every type.

    Accepted: a list of dicts (the config-file form); short names or type names, one or a list
    (``tensorboard``, ``local,tensorboard``, ``TensorboardVisBackend``); and the strings
    mmengine's ``DictAction`` leaves for dicts inside a list on the command line
    (``"[dict(type='LocalVisBackend'),dict(type='TensorboardVisBackend')]"`` arrives as two
    ``"dict(...)"`` strings).

    Args:
        value: The value of ``key`` in the config or in ``--cfg-options``.
        key: The config key, named in errors.

    Raises:
        ValueError: An unknown backend type, or an entry that is neither a name nor a dict,
            with the names that work.
        ImportError: A backend whose package is not installed, with the install command.
    """
    from mmengine.registry import VISBACKENDS

    import ditask_mm.registry  # noqa: F401  (VISBACKENDS of every scope is filled)
    entries = list(value) if isinstance(value, (list, tuple)) else [value]
    backends = []
    for entry in entries:
        if isinstance(entry, str):
            text = entry.strip()
            if text.startswith(('dict(', '{')):
                entry = _parse_dict_call(text, key)
            else:
                entry = dict(type=VIS_BACKEND_NAMES.get(text.lower(), text))
        if not isinstance(entry, dict) or not isinstance(entry.get('type'), str):
            raise ValueError(f'{key}: {entry!r} is not a backend; expected dict(type=...) or a short name '
                             f'({", ".join(VIS_BACKEND_NAMES)})')
        entry = dict(entry)
        kind = entry['type'].split('.')[-1]
        if kind not in VISBACKENDS.module_dict:
            raise ValueError(f'{key}: unknown visualization backend {entry["type"]!r}; expected a short name '
                             f'({", ".join(VIS_BACKEND_NAMES)}) or one of {sorted(VISBACKENDS.module_dict)}, e.g. '
                             '--cfg-options vis_backends=local,tensorboard')
        package, install = _BACKEND_PACKAGES.get(kind, (None, None))
        if package is not None and importlib.util.find_spec(package) is None:
            raise ImportError(f'{key}: {kind} needs the {package!r} package, which is not installed; {install}')
        backends.append(entry)
    return backends  # [] (``vis_backends=[]``) is allowed: no scalars written anywhere but the log


def sync_vis_backends(cfg: Config, options: Optional[dict] = None) -> None:
    """Make ``visualizer.vis_backends`` the backends the user asked for, in either spelling.

    The top-level ``vis_backends`` is the documented switch, but the base file's
    ``visualizer`` dict captured its value when the file was parsed, so a child
    config or ``--cfg-options`` that changes only the top-level name would not
    reach the visualizer. Rules, in order: a ``--cfg-options`` key wins
    (``visualizer.vis_backends`` over ``vis_backends`` when both are given);
    in the files, a top-level ``vis_backends`` different from the visualizer's
    wins while the visualizer still has the base default, else the
    visualizer's own list does. Both names end up holding the same checked list.
    """
    options = options or {}
    visualizer = cfg.get('visualizer')
    if not isinstance(visualizer, dict):
        return
    if 'visualizer.vis_backends' in options:
        chosen, key = visualizer.get('vis_backends'), 'visualizer.vis_backends'
    elif 'vis_backends' in options:
        chosen, key = cfg.get('vis_backends'), 'vis_backends'
    else:
        top, own = cfg.get('vis_backends'), visualizer.get('vis_backends')
        if top is not None and top != own and (own is None or own == _DEFAULT_VIS_BACKENDS):
            chosen, key = top, 'vis_backends'
        elif own is not None:
            chosen, key = own, 'visualizer.vis_backends'
        else:
            return
    backends = normalize_vis_backends(chosen, key)
    cfg.visualizer.vis_backends = backends
    cfg.vis_backends = copy.deepcopy(backends)


def _dataset_nodes(node: Any) -> Iterator[dict]:
    """A dataloader's dataset config and the datasets it wraps (``dataset`` / ``datasets``)."""
    if not isinstance(node, dict):
        return
    yield node
    yield from _dataset_nodes(node.get('dataset'))
    for item in node.get('datasets') or ():
        yield from _dataset_nodes(item)


def sync_data_root(cfg: Config, file_cfg: Config, options: Mapping[str, Any]) -> None:
    """Let ``--cfg-options data_root=DIR`` reach every dataset that read the file's ``data_root``.

    The dataloaders copy the top-level ``data_root`` when the file is parsed,
    so overriding the top-level name alone would change nothing. Every dataset
    (wrappers included) whose ``data_root`` is the file's top-level value gets
    the new one, unless that dataloader's own ``data_root`` is also given.
    """
    if 'data_root' not in options or file_cfg.get('data_root') is None:
        return
    old, new = file_cfg.data_root, cfg.data_root
    for name in [k for k in cfg.keys() if k.endswith('_dataloader')]:
        if any(key.startswith(f'{name}.') and key.endswith('data_root') for key in options):
            continue
        loader = cfg.get(name)
        for dataset in _dataset_nodes(loader.get('dataset') if isinstance(loader, dict) else None):
            if dataset.get('data_root') == old:
                dataset['data_root'] = new


def load_run_config(config: str, cfg_options: Optional[Sequence[str]] = None, launcher: str = 'none',
                    work_dir: Optional[str] = None) -> Config:
    """Read ``config``, apply ``--cfg-options`` and settle the launcher and work dir.

    Args:
        config: Config file path.
        cfg_options: ``key=value`` strings, parsed as mmengine's ``DictAction``.
            When they change ``train_cfg.max_epochs`` (or the top-level
            ``max_epochs``), the LR schedule is stretched to the new length
            (:func:`~ditask_mm.engine.schedule.fit_schedule_to_run_length`).
            ``data_root=DIR`` moves every dataset that read the file's
            ``data_root`` (:func:`sync_data_root`).
            ``vis_backends`` and ``visualizer.vis_backends`` are kept in step
            and accept short names (``vis_backends=local,tensorboard``); see
            :func:`sync_vis_backends`.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        work_dir: Command-line work dir; it wins over the config's, which
            wins over ``./work_dirs/<config name>``.

    The task list is settled last (:func:`~ditask_mm.engine.task_config.resolve_tasks`):
    the top-level ``tasks`` (``--cfg-options "tasks=['semseg','sal']"``
    included) goes to the model, the datasets and the evaluators, and a part
    naming other tasks raises ``ValueError`` here, before any runner exists.
    """
    cfg = Config.fromfile(config)
    options = {}
    if cfg_options:
        file_cfg = copy.deepcopy(cfg)
        parser = argparse.ArgumentParser()
        parser.add_argument('--options', nargs='+', action=DictAction)
        options = parser.parse_args(['--options', *cfg_options]).options
        for key in options:
            _replace_none_parents(cfg, key)
        cfg.merge_from_dict(options)
        if 'max_epochs' in options and 'train_cfg.max_epochs' not in options and cfg.get('train_cfg') \
                and 'max_epochs' in cfg.train_cfg:
            cfg.train_cfg.max_epochs = cfg.max_epochs  # the top-level name only feeds the file's expressions
        fit_schedule_to_run_length(cfg, file_cfg, options)
        sync_data_root(cfg, file_cfg, options)
    sync_vis_backends(cfg, options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    cfg.setdefault('runner_type', 'CheckedRunner')
    return resolve_tasks(cfg)
