"""ditask_mm's evaluation: :class:`MultiTaskMetric`, the per-task evaluators and :class:`AtomicDumpResults`."""
from .dump import AtomicDumpResults  # noqa: F401
from .metrics import *  # noqa: F401,F403
from .metrics import __all__  # noqa: F401
