"""Every patch ditask_mm applies to the frozen OpenMMLab stack.

Each patch lives in its own module with an ``apply()`` that is idempotent,
logs once, and cites its upstream reference. :func:`apply_all` runs them in
order; ``import ditask_mm`` calls it before anything imports ``mmseg.models``.

========================  =====================================================
patch                     what it fixes
========================  =====================================================
``mmcv_ops``              ``import mmseg.models`` with mmcv-lite (no mmcv._ext)
``checkpoint``            mmengine checkpoints under torch >= 2.6 weights_only
========================  =====================================================
"""
from typing import Dict, Optional

from . import checkpoint, mmcv_ops
from .mmcv_ops import MissingCompiledOpError

PATCHES = {'mmcv_ops': mmcv_ops, 'checkpoint': checkpoint}


def apply_all() -> Dict[str, Optional[str]]:
    """Apply every compat patch and return each one's status string."""
    return {name: module.apply() for name, module in PATCHES.items()}


__all__ = ['apply_all', 'PATCHES', 'MissingCompiledOpError', 'checkpoint', 'mmcv_ops']
