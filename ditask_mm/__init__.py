"""ditask_mm: DiTASK diffeomorphic multi-task fine-tuning for mmsegmentation.

Importing the package applies the compat patches for the frozen OpenMMLab
stack (:mod:`ditask_mm.compat`) before anything imports ``mmseg.models``, and
registers ditask_mm's modules in the ``ditask_mm`` registry scope.
"""
from . import compat

COMPAT_STATUS = compat.apply_all()

from . import registry  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ['COMPAT_STATUS', 'compat', 'registry', '__version__']
