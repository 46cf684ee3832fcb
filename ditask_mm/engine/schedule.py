"""Keep the learning-rate schedule whole when ``--cfg-options`` shortens or lengthens the run.

A config's ``param_scheduler`` is plain numbers once the file is parsed: the
quick config's cosine ends at epoch 8 however ``train_cfg.max_epochs`` is
overridden later, so ``--cfg-options train_cfg.max_epochs=1`` would stop
inside the warm-up. :func:`fit_schedule_to_run_length` stretches every
scheduler's ``begin``/``end`` (and ``T_max``) by ``new / old`` run length, so
the run still warms up, decays and ends at the floor. It leaves the schedule
alone when the same ``--cfg-options`` also set ``param_scheduler``.
"""
import copy
import logging
from typing import List, Optional, Tuple

from mmengine.config import Config
from mmengine.logging import print_log

_INF = float('inf')


def _scale_bound(value, factor: float, fractional_ok: bool):
    if value is None or value == _INF or value >= 1e9:  # mmengine's INF is a large int
        return value
    scaled = value * factor
    if fractional_ok:
        return round(scaled, 9)
    return int(round(scaled))


def stretch_schedulers(schedulers: List[dict], factor: float, by_epoch: bool) -> List[dict]:
    """Copies of ``schedulers`` with the bounds of those counted ``by_epoch`` (or not) multiplied by ``factor``.

    Epoch-based schedulers with ``convert_to_iter_based=True`` may get
    fractional epoch bounds (mmengine converts them to iterations); the others
    are rounded to whole steps. ``T_max`` that equalled ``end - begin`` is
    dropped, so mmengine derives it from the new whole-iteration bounds.

    Raises:
        ValueError: A scheduler would become empty (``end <= begin``).
    """
    out = []
    for scheduler in schedulers:
        scheduler = copy.deepcopy(dict(scheduler))
        if bool(scheduler.get('by_epoch', True)) != by_epoch:
            out.append(scheduler)
            continue
        fractional_ok = by_epoch and bool(scheduler.get('convert_to_iter_based', False))
        begin, end = scheduler.get('begin', 0), scheduler.get('end')
        t_max = scheduler.get('T_max')
        if t_max is not None and end is not None and t_max == end - begin:
            scheduler.pop('T_max')
        elif t_max is not None:
            scheduler['T_max'] = _scale_bound(t_max, factor, fractional_ok)
        scheduler['begin'] = _scale_bound(begin, factor, fractional_ok)
        if end is not None:
            scheduler['end'] = _scale_bound(end, factor, fractional_ok)
            if scheduler['end'] <= scheduler['begin']:
                raise ValueError(f'param_scheduler {scheduler.get("type")}: stretching [{begin}, {end}) by '
                                 f'{factor:g} leaves it empty; set param_scheduler for this run length yourself')
        out.append(scheduler)
    return out


def _run_length(cfg: Config) -> Tuple[Optional[str], Optional[float]]:
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_epochs', 'max_iters'):
        if train_cfg.get(key) is not None:
            return key, train_cfg[key]
    return None, None


def fit_schedule_to_run_length(cfg: Config, file_cfg: Config, cfg_options: Optional[dict] = None) -> bool:
    """Stretch ``cfg.param_scheduler`` when ``cfg``'s run length differs from ``file_cfg``'s.

    Args:
        cfg: The config after ``--cfg-options`` (changed in place).
        file_cfg: The same config as the file wrote it.
        cfg_options: The parsed ``--cfg-options``; a ``param_scheduler``
            entry there means the user set the schedule, which is then kept.

    Returns:
        Whether the schedule was changed (one INFO line says how).
    """
    key, new = _run_length(cfg)
    old_key, old = _run_length(file_cfg)
    options = cfg_options or {}
    if key is None or key != old_key or not old or new == old or cfg.get('param_scheduler') is None:
        return False
    if any(k == 'param_scheduler' or k.startswith('param_scheduler.') for k in options):
        return False
    schedulers = cfg.param_scheduler
    if isinstance(schedulers, dict) and 'type' not in schedulers:
        print_log(f'[ditask_mm] train_cfg.{key} changed, but param_scheduler holds one schedule per optimizer: '
                  'left as the config wrote it', logger='current', level=logging.WARNING)
        return False
    single = isinstance(schedulers, dict)
    schedulers = [schedulers] if single else list(schedulers)
    stretched = stretch_schedulers(schedulers, new / old, by_epoch=(key == 'max_epochs'))
    cfg.param_scheduler = stretched[0] if single else stretched
    unit = 'epochs' if key == 'max_epochs' else 'iterations'
    spans = ', '.join(f'{s.get("type")} [{s.get("begin", 0):g}, {s.get("end", _INF):g})' for s in stretched)
    print_log(f'[ditask_mm] train_cfg.{key} is {new:g} instead of the config\'s {old:g}: the schedule is '
              f'stretched to fit ({unit}): {spans}', logger='current')
    return True


def _is_whole(value) -> bool:
    return value is None or float(value).is_integer() or value >= 1e9


def whole_iteration_schedule(schedulers, epoch_length: int, logger=None):
    """Turn fractional epoch bounds (from :func:`stretch_schedulers`) into whole iterations.

    mmengine truncates ``begin * epoch_length`` on its own, and a warm-up of
    fewer than two iterations never raises the LR (the cosine that follows
    then keeps the warm-up's start factor). Schedulers with
    ``convert_to_iter_based=True`` and a fractional bound become iteration
    based with rounded bounds; one shorter than two iterations that another
    scheduler follows is dropped, with a WARNING.

    Args:
        schedulers: ``param_scheduler`` as the config holds it (a dict or a
            list of dicts; a dict of those per optimizer is passed through).
        epoch_length: Iterations per training epoch.
        logger: Where to warn; the current logger if None.

    Returns:
        The schedulers, changed only where a bound was fractional.
    """
    if isinstance(schedulers, dict) and 'type' not in schedulers:
        return schedulers  # one schedule per optimizer: left as the config wrote it
    single = isinstance(schedulers, dict)
    items = [schedulers] if single else list(schedulers)
    out = []
    for scheduler in items:
        if not isinstance(scheduler, dict) or not scheduler.get('convert_to_iter_based') or (
                _is_whole(scheduler.get('begin', 0)) and _is_whole(scheduler.get('end'))):
            out.append(scheduler)
            continue
        scheduler = copy.deepcopy(dict(scheduler))
        scheduler.pop('convert_to_iter_based')
        scheduler['by_epoch'] = False
        scheduler['begin'] = int(round(scheduler.get('begin', 0) * epoch_length))
        if scheduler.get('end') is not None and scheduler['end'] < 1e9:
            scheduler['end'] = int(round(scheduler['end'] * epoch_length))
        out.append(scheduler)
    kept = []
    for index, scheduler in enumerate(out):
        end = scheduler.get('end') if isinstance(scheduler, dict) else None
        followed = any(isinstance(o, dict) and o.get('begin', 0) >= (end or 0) for o in out[index + 1:])
        if (isinstance(scheduler, dict) and not scheduler.get('by_epoch', True) and end is not None
                and end - scheduler.get('begin', 0) < 2 and followed):
            print_log(f'[ditask_mm] {scheduler.get("type")} would last {end - scheduler.get("begin", 0)} '
                      f'iteration(s) at {epoch_length} iterations per epoch; dropped', logger=logger or 'current',
                      level=logging.WARNING)
            continue
        kept.append(scheduler)
    return kept[0] if single and kept else kept
