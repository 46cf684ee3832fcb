"""Load a config the way ``tools/train.py`` and ``tools/test.py`` both need."""
import argparse
import copy
import os.path as osp
from typing import Any, Iterator, Mapping, Optional, Sequence

from mmengine.config import Config, DictAction

from .schedule import fit_schedule_to_run_length
from .vis_backends import sync_vis_backends
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
            :func:`~ditask_mm.engine.vis_backends.sync_vis_backends`.
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
