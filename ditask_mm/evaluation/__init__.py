"""ditask_mm's evaluation: :class:`MultiTaskMetric` and the per-task evaluators."""
from .metrics import *  # noqa: F401,F403
from .metrics import __all__  # noqa: F401
