"""Model components registered in the ``ditask_mm`` scope.

Importing this package imports ``mmseg.models`` so that lookups in
:data:`ditask_mm.registry.MODELS` fall back to mmseg's classes (the parent
registry is only searched once its modules are imported), and the adapters so
that their config types resolve.
"""
import mmseg.models  # noqa: F401  (populates the parent registry)

from .. import adapters  # noqa: F401  (registers the adapter layers)
from . import backbones, decode_heads, losses, segmentors  # noqa: F401,E402
from .data_preprocessor import MultiTaskDataPreProcessor  # noqa: F401,E402
