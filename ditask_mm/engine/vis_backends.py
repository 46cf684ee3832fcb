"""Visualization backends named in a config or on the command line, checked and kept in step.

mmengine reads ``visualizer.vis_backends``; the base runtime config also has a
top-level ``vis_backends``, which the visualizer copies when the file is
parsed. :func:`sync_vis_backends` makes the name the user changed (in a child
config or with ``--cfg-options``) reach the visualizer, and
:func:`normalize_vis_backends` accepts the short names and the strings
mmengine's command-line parser leaves for dicts inside a list.
"""
import ast
import copy
import importlib.util
from typing import Any, List, Optional

from mmengine.config import Config

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
