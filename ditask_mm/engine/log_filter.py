"""A readable default log: mmengine's per-parameter lines go to DEBUG.

With mmengine 0.10.7 one training run logs, at INFO or WARNING,

* one ``paramwise_options -- NAME:weight_decay=0.0`` line per norm and bias
  parameter, and one ``NAME is skipped since its requires_grad=False`` line
  per frozen parameter (``DefaultOptimWrapperConstructor``; DiTASK freezes
  almost the whole backbone);
* ``Loads checkpoint by ... backend from path: FILE`` for every file its
  ``CheckpointLoader`` reads, next to our own line for the same file;
* the hook execution order (one record of about a hundred lines);

and ``BaseModule.init_weights`` writes ``NAME - SHAPE: Initialized by ...``
for every parameter straight into the log file.

:class:`DemoteToDebug`, which :class:`~ditask_mm.engine.CheckedRunner`
installs on its logger, turns the first three into DEBUG records (shown with
``log_level='DEBUG'``) and counts them, and :func:`init_info_at_debug` sends
the initialisation table through the logger at DEBUG instead of into the file.
mmengine itself is not changed.
"""
import logging
import re
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Pattern, Tuple

from mmengine.dist import is_main_process
from mmengine.logging import MMLogger
from torch import nn

#: ``(name, pattern)`` of the messages demoted to DEBUG; the name keys :attr:`DemoteToDebug.counts`.
DEMOTED_MESSAGES: Tuple[Tuple[str, Pattern], ...] = (
    ('paramwise_options', re.compile(r'^paramwise_options -- ')),
    ('frozen_skipped', re.compile(r' is skipped since its requires_grad=False$')),
    ('mmengine_checkpoint_load', re.compile(r'^Loads checkpoint by \S+ backend from path: ')),
    ('hook_order', re.compile(r'^Hooks will be executed in the following order:')),
)


class DemoteToDebug(logging.Filter):
    """Lower the records of :data:`DEMOTED_MESSAGES` to DEBUG, counting them.

    Installed on a logger, it runs after the logger's own level check and
    before its handlers', so a demoted record reaches a handler only when
    that handler shows DEBUG (``log_level='DEBUG'``).

    Attributes:
        counts: Demoted records per :data:`DEMOTED_MESSAGES` name since the
            last :meth:`reset`.
    """

    def __init__(self) -> None:
        super().__init__('ditask_mm.demote_to_debug')
        self.counts: Dict[str, int] = {}

    def reset(self) -> None:
        """Start counting again."""
        self.counts = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            return True
        message = record.getMessage()
        for name, pattern in DEMOTED_MESSAGES:
            if pattern.search(message):
                record.levelno, record.levelname = logging.DEBUG, 'DEBUG'
                self.counts[name] = self.counts.get(name, 0) + 1
                break
        return True


def install_log_filter(logger: logging.Logger) -> DemoteToDebug:
    """Add a :class:`DemoteToDebug` to ``logger`` (once) and return it."""
    for existing in logger.filters:
        if isinstance(existing, DemoteToDebug):
            return existing
    demote = DemoteToDebug()
    logger.addFilter(demote)
    return demote


def _log_init_info(model: nn.Module) -> None:
    """``BaseModule._dump_init_info``'s table as one DEBUG record of the current logger (rank 0 only)."""
    if not is_main_process():
        return
    logger = MMLogger.get_current_instance()
    if not logger.isEnabledFor(logging.DEBUG):
        return
    info = getattr(model, '_params_init_info', {})
    lines = [f'{name} - {tuple(param.shape)}: {info[param]["init_info"] if param in info else "?"}'
             for name, param in model.named_parameters()]
    logger.debug('Name of parameter - Initialization information\n' + '\n'.join(lines))


@contextmanager
def init_info_at_debug(model: Optional[nn.Module]) -> Iterator[None]:
    """Within the block, ``model.init_weights()`` logs its per-parameter table at DEBUG.

    mmengine's ``BaseModule.init_weights`` calls ``self._dump_init_info()``
    on the top-level module, which writes the table into the log file's
    stream, bypassing levels and filters. An instance attribute of that name
    shadows the method for the duration of the block.
    """
    if model is None or not hasattr(model, '_dump_init_info'):
        yield
        return
    model._dump_init_info = lambda: _log_init_info(model)
    try:
        yield
    finally:
        del model._dump_init_info


def optimizer_summary(counts: Dict[str, int]) -> Optional[str]:
    """One INFO line for the demoted optimiser lines, or None when there were none."""
    paramwise, frozen = counts.get('paramwise_options', 0), counts.get('frozen_skipped', 0)
    if not paramwise and not frozen:
        return None
    return (f'optimizer: {frozen} frozen parameters (requires_grad=False) left out, {paramwise} with '
            "paramwise options (e.g. weight_decay=0); one line per parameter with log_level='DEBUG'")
