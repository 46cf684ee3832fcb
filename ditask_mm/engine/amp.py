"""Settle mixed precision (``--amp`` / ``AmpOptimWrapper``) before the Runner is built.

The paper configs train with ``optim_wrapper.type='AmpOptimWrapper'`` and
``loss_scale='dynamic'`` (``configs/_base_/schedules/schedule_300e.py``).
mmengine's AMP needs CUDA, and mmengine's ``OptimWrapper`` rejects the
AMP-only arguments (``TypeError: ... unexpected keyword argument
'loss_scale'``), so switching the type alone is not enough.
:func:`resolve_amp` makes both cases work:

* with CUDA, ``--amp`` selects ``AmpOptimWrapper`` (``loss_scale='dynamic'``
  unless the config sets one);
* without CUDA, an AMP request (``--amp`` or the config) falls back to fp32
  with ``OptimWrapper``, logging one WARNING;
* whenever the resulting type is not an ``AmpOptimWrapper`` (e.g. after
  ``--cfg-options optim_wrapper.type=OptimWrapper``), the AMP-only keys are
  dropped with an INFO line; ``optimizer``, ``paramwise_cfg``, ``clip_grad``,
  ``accumulative_counts``, ``constructor`` and any other key are kept.
"""
import inspect
import logging
from typing import Any, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

_LOG_PREFIX = '[ditask_mm.amp]'


def amp_only_keys() -> Tuple[str, ...]:
    """The constructor arguments of ``AmpOptimWrapper`` that ``OptimWrapper`` does not take.

    Read from the installed mmengine (``loss_scale``, ``dtype`` and
    ``use_fsdp`` in 0.10.7), so a later mmengine's new AMP argument is
    dropped as well.
    """
    plain = set(inspect.signature(OptimWrapper.__init__).parameters)
    keys = [name for name, param in inspect.signature(AmpOptimWrapper.__init__).parameters.items()
            if name not in plain and name != 'self'
            and param.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]
    return tuple(keys)


def is_amp_wrapper(wrapper_type: Any) -> bool:
    """Whether an ``optim_wrapper.type`` (a class or a registered name) is an ``AmpOptimWrapper``."""
    if isinstance(wrapper_type, type):
        return issubclass(wrapper_type, AmpOptimWrapper)
    if not isinstance(wrapper_type, str):
        return False
    if wrapper_type.split('.')[-1] == 'AmpOptimWrapper':
        return True
    try:
        cls = OPTIM_WRAPPERS.get(wrapper_type)
    except Exception:  # an unknown scope: the Runner will report the name itself
        cls = None
    return isinstance(cls, type) and issubclass(cls, AmpOptimWrapper)


def _type_name(wrapper_type: Any) -> str:
    return wrapper_type.__name__ if isinstance(wrapper_type, type) else str(wrapper_type)


def _drop_amp_keys(optim_wrapper: dict) -> list:
    dropped = [key for key in amp_only_keys() if key in optim_wrapper]
    for key in dropped:
        optim_wrapper.pop(key)
    return dropped


def resolve_amp(cfg: Config, amp_requested: bool, cuda_available: Optional[bool] = None) -> Config:
    """Make ``cfg.optim_wrapper`` consistent with ``--amp`` and the available hardware.

    Args:
        cfg: The run config (changed in place and returned).
        amp_requested: Whether ``--amp`` was passed.
        cuda_available: Override of ``torch.cuda.is_available()`` (tests).

    Returns:
        ``cfg``, whose ``optim_wrapper`` is an ``AmpOptimWrapper`` only when
        CUDA is available, and holds AMP-only keys only in that case.

    Raises:
        ValueError: ``--amp`` was passed but the config has no
            ``optim_wrapper`` to switch.
    """
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is None:
        if amp_requested:
            raise ValueError('--amp: the config has no optim_wrapper to switch to AmpOptimWrapper; '
                             'add optim_wrapper = dict(type=\'OptimWrapper\', optimizer=...) to it')
        return cfg
    config_amp = is_amp_wrapper(optim_wrapper.get('type'))
    if cuda_available:
        if amp_requested:
            optim_wrapper['type'] = 'AmpOptimWrapper'
            optim_wrapper.setdefault('loss_scale', 'dynamic')
    elif amp_requested or config_amp:
        in_config = f"the config (optim_wrapper.type='{_type_name(optim_wrapper.get('type'))}')"
        source = {(True, True): f'--amp and by {in_config}', (True, False): '--amp',
                  (False, True): in_config}[(amp_requested, config_amp)]
        optim_wrapper['type'] = 'OptimWrapper'
        dropped = _drop_amp_keys(optim_wrapper)
        print_log(f'{_LOG_PREFIX} AMP (mixed precision) needs CUDA and no CUDA device is available: '
                  f'training runs in fp32 with OptimWrapper instead. AMP was requested by {source}'
                  + (f'; dropped the AMP-only setting(s) {dropped}' if dropped else '') + '.',
                  logger='current', level=logging.WARNING)
        return cfg
    if not is_amp_wrapper(optim_wrapper.get('type')):
        dropped = _drop_amp_keys(optim_wrapper)
        if dropped:
            print_log(f"{_LOG_PREFIX} optim_wrapper.type is '{_type_name(optim_wrapper.get('type'))}', "
                      f'not AmpOptimWrapper: dropped the AMP-only setting(s) {dropped}', logger='current')
    return cfg
