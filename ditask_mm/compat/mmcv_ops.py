"""Make ``import mmseg.models`` work with mmcv-lite (no ``mmcv._ext``).

mmseg 1.2.2 imports ``point_sample`` from ``mmcv.ops`` while importing
``mmseg.utils`` (``mmseg/utils/mask_classification.py:5``), and
``mmcv/ops/__init__.py`` eagerly loads every compiled op, so with mmcv-lite any
import of ``mmseg.models``, ``mmseg.datasets``, ``mmseg.visualization`` or
``mmseg.apis`` fails with ``No module named 'mmcv._ext'``.

When the compiled extension is absent this patch registers a small
``mmcv.ops`` module that offers only what is pure PyTorch
(``mmcv/ops/point_sample.py``: ``point_sample``, ``bilinear_grid_sample`` and
its helpers). Every other name raises :class:`MissingCompiledOpError`, an
``ImportError`` that says how to install full mmcv, so the guarded imports in
mmseg (``cc_head``, ``psa_head``, ``point_head``) take their fallback. The one
compiled name mmseg imports without a guard, ``sigmoid_focal_loss`` (used only
for CUDA tensors), is bound to a function that raises the same error when
called. A full mmcv build is detected and left untouched.

Upstream: mmseg imports at ``mmseg/utils/mask_classification.py:5`` and
``mmseg/models/losses/focal_loss.py:6``; reports in
https://github.com/open-mmlab/mmdetection/issues/3271 and
https://github.com/open-mmlab/mmdetection3d/issues/3093.
"""
import importlib.abc
import importlib.util
import os.path as osp
import sys
import types
import warnings
from typing import Callable, Optional

from ._logging import log_once

#: Pure-PyTorch sources inside mmcv/ops that the shim may load.
PURE_TORCH_SUBMODULES = ('point_sample', )
#: Compiled ops that mmseg imports unguarded at import time; bound to a
#: function that raises only when called.
CALL_TIME_PLACEHOLDERS = ('sigmoid_focal_loss', )

INSTALL_HINT = (
    'It needs the compiled mmcv extension (mmcv._ext), and only mmcv-lite is '
    'installed. Install full mmcv 2.1.x built for your torch: uninstall mmcv-lite, '
    'build mmcv 2.1.0 from source with MMCV_WITH_OPS=1 (torch >= 2.14 needs -std=c++20 '
    "in mmcv's setup.py); ditask-mm's docs/install.md has the commands. Or choose a "
    'model that does not use this op.')


class MissingCompiledOpError(ModuleNotFoundError):
    """A compiled mmcv op was requested while only mmcv-lite is installed."""


def _missing(name: str) -> MissingCompiledOpError:
    return MissingCompiledOpError(f'mmcv.ops.{name} is not available. {INSTALL_HINT}',
                                  name='mmcv._ext')


def _placeholder(name: str) -> Callable:

    def unavailable(*args, **kwargs):
        raise _missing(name)

    unavailable.__name__ = name
    unavailable.__doc__ = f'Placeholder for the compiled mmcv.ops.{name}; raises when called.'
    return unavailable


class LiteOpsModule(types.ModuleType):
    """Stand-in for ``mmcv.ops`` that serves pure-PyTorch ops only."""

    def __getattr__(self, name: str):
        if name.startswith('__'):
            raise AttributeError(name)
        raise _missing(name)


class _LiteOpsFinder(importlib.abc.MetaPathFinder):
    """Resolve ``import mmcv.ops.<sub>`` while the shim is active."""

    def __init__(self, ops_dir: str) -> None:
        self.ops_dir = ops_dir

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith('mmcv.ops.'):
            return None
        sub = fullname[len('mmcv.ops.'):]
        if sub in PURE_TORCH_SUBMODULES:
            return importlib.util.spec_from_file_location(
                fullname, osp.join(self.ops_dir, f'{sub}.py'))
        raise _missing(sub)


def compiled_mmcv_available() -> bool:
    """Whether the compiled extension ``mmcv._ext`` can be imported."""
    try:
        return importlib.util.find_spec('mmcv._ext') is not None
    except (ImportError, ValueError):
        return False


def is_active() -> bool:
    """Whether ``sys.modules['mmcv.ops']`` is this shim."""
    return isinstance(sys.modules.get('mmcv.ops'), LiteOpsModule)


def apply() -> Optional[str]:
    """Install the shim if needed. Idempotent.

    Returns:
        A short status: ``'installed'``, ``'active'`` (already installed),
        ``'full-mmcv'`` (compiled ops present, untouched),
        ``'already-imported'`` (a real ``mmcv.ops`` is loaded) or ``None``
        when mmcv is not installed at all.
    """
    if is_active():
        return 'active'
    if importlib.util.find_spec('mmcv') is None:
        return None
    if compiled_mmcv_available():
        log_once('mmcv_ops.full', 'full mmcv detected (mmcv._ext present); mmcv.ops untouched')
        return 'full-mmcv'
    if 'mmcv.ops' in sys.modules:
        return 'already-imported'
    import mmcv
    ops_dir = osp.join(osp.dirname(mmcv.__file__), 'ops')
    ops = LiteOpsModule('mmcv.ops', doc=__doc__)
    ops.__file__ = osp.join(ops_dir, '__init__.py')
    ops.__path__ = []  # a package, so ``mmcv.ops.<sub>`` reaches the finder
    finder = _LiteOpsFinder(ops_dir)
    sys.meta_path.insert(0, finder)
    sys.modules['mmcv.ops'] = ops
    mmcv.ops = ops
    for sub in PURE_TORCH_SUBMODULES:
        module = importlib.import_module(f'mmcv.ops.{sub}')
        setattr(ops, sub, module)
    pure = sys.modules['mmcv.ops.point_sample']
    for name in ('point_sample', 'bilinear_grid_sample', 'SimpleRoIAlign'):
        setattr(ops, name, getattr(pure, name))
    for name in CALL_TIME_PLACEHOLDERS:
        setattr(ops, name, _placeholder(name))
    # mmcv-lite's own bricks warn once per process that this compiled op is
    # missing; the log line below says the same for every compiled op.
    warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformableAttention``',
                            category=UserWarning)
    log_once('mmcv_ops.shim', 'mmcv._ext not found (mmcv-lite): mmcv.ops now serves only '
             'pure-PyTorch ops (point_sample, bilinear_grid_sample); compiled ops raise '
             'MissingCompiledOpError with install instructions')
    return 'installed'
