"""ditask_mm's evaluation: :class:`MultiTaskMetric`, the per-task evaluators, :class:`AtomicDumpResults` and
:class:`EdgePNGWriter` (offline edge scoring: :mod:`ditask_mm.evaluation.edge_folder`)."""
from .dump import AtomicDumpResults  # noqa: F401
from .edge_pngs import EdgePNGWriter  # noqa: F401
from .metrics import *  # noqa: F401,F403
from .metrics import __all__  # noqa: F401
