"""Load mmengine's own checkpoints under torch >= 2.6 (``weights_only``).

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10.7
calls ``torch.load`` without the argument (``mmengine/runner/checkpoint.py:347``)
while the checkpoints its ``CheckpointHook`` writes pickle
``mmengine.logging.HistoryBuffer`` and numpy arrays, so ``--resume``,
``tools/test.py`` and ``init_model`` fail with ``Weights only load failed``.

This patch re-registers the loader for local paths (scheme prefix ``''``) with
``weights_only=False``, which is what mmengine ``main`` does since commit
151a87ab ("[Fix] Load checkpoint with weights_only=False", #1670; unreleased),
see https://github.com/open-mmlab/mmengine/issues/1655. Remote schemes
(``http://``, ``https://``, ``pavi://``...) keep torch's safe default: only
files already on the user's disk are unpickled in full.
"""
import os.path as osp
from typing import Optional, Union

import torch
from mmengine.runner.checkpoint import CheckpointLoader

from ._logging import log_once


def load_local_checkpoint(filename: str,
                          map_location: Optional[Union[str, torch.device]] = None) -> dict:
    """Load a local checkpoint file with ``weights_only=False``.

    Args:
        filename: Path to the checkpoint; ``~`` is expanded.
        map_location: Passed to :func:`torch.load`.

    Returns:
        Whatever the file holds, usually a dict with ``state_dict``.

    Raises:
        FileNotFoundError: If ``filename`` is not a file.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    return torch.load(filename, map_location=map_location, weights_only=False)


def _needs_patch() -> bool:
    major, minor = (int(p) for p in torch.__version__.split('.')[:2])
    return (major, minor) >= (2, 6)


def is_active() -> bool:
    """Whether the local-file loader registered in mmengine is ours."""
    return CheckpointLoader._schemes.get('') is load_local_checkpoint


def apply() -> Optional[str]:
    """Register :func:`load_local_checkpoint` for local paths. Idempotent.

    Returns:
        ``'installed'``, ``'active'`` (already installed) or ``None`` when the
        torch version does not need it.
    """
    if is_active():
        return 'active'
    if not _needs_patch():
        return None
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
    log_once('checkpoint.local', f'torch {torch.__version__}: local checkpoints are loaded '
             'with weights_only=False (mmengine#1655); remote ones keep weights_only=True')
    return 'installed'
