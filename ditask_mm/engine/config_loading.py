"""Load a config the way ``tools/train.py`` and ``tools/test.py`` both need."""
import argparse
import copy
import os.path as osp
from typing import Optional, Sequence

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


def load_run_config(config: str, cfg_options: Optional[Sequence[str]] = None, launcher: str = 'none',
                    work_dir: Optional[str] = None) -> Config:
    """Read ``config``, apply ``--cfg-options`` and settle the launcher and work dir.

    Args:
        config: Config file path.
        cfg_options: ``key=value`` strings, parsed as mmengine's ``DictAction``.
            When they change ``train_cfg.max_epochs`` (or the top-level
            ``max_epochs``), the LR schedule is stretched to the new length
            (:func:`~ditask_mm.engine.schedule.fit_schedule_to_run_length`).
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        work_dir: Command-line work dir; it wins over the config's, which
            wins over ``./work_dirs/<config name>``.

    The task list is settled last (:func:`~ditask_mm.engine.task_config.resolve_tasks`):
    the top-level ``tasks`` (``--cfg-options "tasks=['semseg','sal']"``
    included) goes to the model, the datasets and the evaluators, and a part
    naming other tasks raises ``ValueError`` here, before any runner exists.
    """
    cfg = Config.fromfile(config)
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
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    cfg.setdefault('runner_type', 'CheckedRunner')
    return resolve_tasks(cfg)
