"""Log-once helper shared by the compat patches."""
from typing import Set

from mmengine.logging import MMLogger, print_log

_SEEN: Set[str] = set()


def log_once(key: str, message: str) -> None:
    """Log ``message`` through mmengine's current logger the first time only.

    Args:
        key: Identity of the message; later calls with the same key are silent.
        message: Text to log at INFO level.
    """
    if key in _SEEN:
        return
    _SEEN.add(key)
    print_log(f'[ditask_mm.compat] {message}', logger=MMLogger.get_current_instance())
