"""Read a checkpoint file into one well-defined type, and say clearly why when it cannot be read.

Every path that reads a checkpoint (the Swin pretrained loader, the adapter
loader, :class:`~ditask_mm.engine.CheckedRunner` and the tools) calls
:func:`read_checkpoint`, which returns a :class:`CheckpointContents`: the
flat ``{name: tensor}`` state dict, the ``meta`` dict and the object the file
holds. The state dict is found the same way for every layout: mmengine's
``{'state_dict': ...}``, the official Swin ``{'model': ...}``, a DDP
``{'module': ...}``, or a bare state dict.

``torch.load`` on a file that was cut off while being written (a full disk,
a job killed mid-save) fails with ``PytorchStreamReader failed reading zip
archive: failed finding central directory``, which names neither the file nor
the cause. :func:`read_checkpoint` turns every such failure into a
:class:`CheckpointReadError` that names the file, its size, whether it is
truncated, and which other checkpoints lie next to it.
"""
import glob
import os
import os.path as osp
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from mmengine.runner import CheckpointLoader
from torch import nn

from ..compat.checkpoint import load_local_checkpoint
from .checkpoint_fit import CheckpointMismatchError

# torch.save writes a zip archive; its end-of-central-directory record is in
# the last 22 bytes plus a comment of at most 64 KiB.
_ZIP_LOCAL_HEADER = b'PK\x03\x04'
_ZIP_END_RECORD = b'PK\x05\x06'
_ZIP64_END_LOCATOR = b'PK\x06\x07'
_ZIP_TAIL_BYTES = 22 + 65535
#: Keys under which a checkpoint nests its state dict, searched in this order.
CONTAINER_KEYS = ('state_dict', 'model', 'module')
_DDP_PREFIX = 'module.'


class CheckpointReadError(RuntimeError):
    """A checkpoint file is missing, empty, truncated or otherwise unreadable.

    Attributes:
        path: The file.
        reason: ``'missing'``, ``'empty'``, ``'truncated'`` or ``'corrupt'``.
    """

    def __init__(self, message: str, path: str = '', reason: str = 'corrupt'):
        super().__init__(message)
        self.path = path
        self.reason = reason


@dataclass
class CheckpointContents:
    """What a checkpoint file holds, in the one form every loader uses.

    Attributes:
        path: The file (or URL) it was read from; named in messages.
        state_dict: Flat ``{name: tensor}``, a leading ``module.`` (DDP)
            removed; non-tensor entries dropped, nested mappings joined with
            dots. May be empty: the callers decide whether that is an error.
        meta: The checkpoint's ``meta`` dict (``{}`` when it has none).
        raw: The object the file holds, unchanged (the training state of a
            full checkpoint lives here: ``message_hub``, ``optimizer``, ...).
    """
    path: str
    state_dict: Dict[str, torch.Tensor]
    meta: Dict[str, Any] = field(default_factory=dict)
    raw: Any = None


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URI (``https://``, ``s3://``...) rather than a local file."""
    return '://' in path


def truncation_problem(path: str) -> Optional[str]:
    """Why ``path`` is certainly not a complete ``torch.save`` file, or None.

    A cheap structural check (no unpickling): the file is empty, or it is a zip
    archive (what ``torch.save`` writes) whose end record is missing.
    Legacy (non-zip) files are not judged here.
    """
    size = osp.getsize(path)
    if size == 0:
        return 'it is empty (0 bytes)'
    with open(path, 'rb') as f:
        head = f.read(4)
        if head != _ZIP_LOCAL_HEADER:
            return None
        f.seek(max(0, size - _ZIP_TAIL_BYTES))
        tail = f.read()
    if _ZIP_END_RECORD not in tail and _ZIP64_END_LOCATOR not in tail:
        return f'it is truncated ({size:,} bytes; the end of the archive is missing)'
    return None


def sibling_checkpoints(path: str) -> List[str]:
    """Other ``*.pth`` files in the folder of ``path``, newest first."""
    folder = osp.dirname(osp.abspath(path))
    others = [p for p in glob.glob(osp.join(glob.escape(folder), '*.pth')) if osp.abspath(p) != osp.abspath(path)]
    return sorted(others, key=osp.getmtime, reverse=True)


def _unreadable(path: str, reason: str, problem: str, err: Optional[BaseException] = None) -> CheckpointReadError:
    others = sibling_checkpoints(path) if osp.isfile(path) else []
    advice = (f' Other checkpoints in its folder, newest first: {", ".join(osp.basename(p) for p in others[:4])}.'
              if others else '')
    detail = f' ({type(err).__name__}: {err})' if err is not None else ''
    return CheckpointReadError(
        f'checkpoint {path} cannot be read: {problem}{detail}. It was probably cut off while being written '
        f'(a full disk or a killed job); use an earlier checkpoint or write this one again.{advice}',
        path=path, reason=reason)


def _load_object(path: str, map_location: Any) -> Any:
    """The object stored in ``path``.

    A local file is checked for truncation first, then unpickled in full
    (``torch.load(weights_only=False)``, as mmengine's loader does with the
    :mod:`ditask_mm.compat.checkpoint` patch, without its own "Loads
    checkpoint" line: the loaders log one line per file themselves). A
    remote one goes to mmengine's ``CheckpointLoader``.
    """
    if is_remote(path):
        return CheckpointLoader.load_checkpoint(path, map_location=map_location)
    if not osp.isfile(path):
        raise CheckpointReadError(f'checkpoint {path} does not exist', path=path, reason='missing')
    problem = truncation_problem(path)
    if problem is not None:
        raise _unreadable(path, 'empty' if osp.getsize(path) == 0 else 'truncated', problem)
    try:
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            device = str(map_location) if isinstance(map_location, (str, torch.device)) else 'cpu'
            return load_file(path, device=device)
        return load_local_checkpoint(path, map_location=map_location)
    except Exception as err:  # zip reader errors, UnpicklingError, EOFError, safetensors errors, ...
        raise _unreadable(path, 'corrupt', 'it is corrupt or not a PyTorch checkpoint', err) from err


def _flatten(obj: Mapping, prefix: str = '') -> Dict[str, torch.Tensor]:
    """The tensors of ``obj``; nested mappings become dotted names."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = f'{prefix}{key}'
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, Mapping):
            out.update(_flatten(value, f'{name}.'))
    return out


def state_dict_of(checkpoint: Any, path: str = '<in-memory checkpoint>') -> Dict[str, torch.Tensor]:
    """The flat state dict of a checkpoint object (see :class:`CheckpointContents`).

    Descends through ``state_dict``/``model``/``module`` containers (and a
    pickled ``nn.Module``), keeps the tensors and removes a leading
    ``module.``.

    Raises:
        CheckpointMismatchError: The object is not a dict, or its
            ``state_dict`` entry is not one.
    """
    obj = checkpoint
    while True:
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
        if not isinstance(obj, Mapping):
            raise CheckpointMismatchError(f'{path}: expected a dict, got {type(obj).__name__}')
        if 'state_dict' in obj and not isinstance(obj['state_dict'], (Mapping, nn.Module)):
            raise CheckpointMismatchError(f'{path}: its state_dict is a {type(obj["state_dict"]).__name__}, '
                                          'not a dict')
        inner = next((obj[k] for k in CONTAINER_KEYS if k in obj and isinstance(obj[k], (Mapping, nn.Module))),
                     None)
        if inner is None:
            break
        obj = inner
    tensors = _flatten(obj)
    return {(k[len(_DDP_PREFIX):] if k.startswith(_DDP_PREFIX) else k): v for k, v in tensors.items()}


def checkpoint_contents(checkpoint: Any, path: str) -> CheckpointContents:
    """:class:`CheckpointContents` of an object already read from ``path`` (or built in memory).

    Raises:
        CheckpointMismatchError: See :func:`state_dict_of`.
    """
    if isinstance(checkpoint, CheckpointContents):
        return checkpoint
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    return CheckpointContents(path=path, state_dict=state_dict_of(checkpoint, path),
                              meta=dict(meta) if isinstance(meta, Mapping) else {}, raw=checkpoint)


def read_checkpoint(path: str, map_location: Any = 'cpu') -> CheckpointContents:
    """Read a checkpoint file: its flat state dict, its ``meta`` and the object it holds.

    Args:
        path: Local ``.pth``/``.pt``/``.bin`` (unpickled in full, so only open
            files you trust) or ``.safetensors`` file (``~`` is expanded), or
            any URI mmengine's ``CheckpointLoader`` accepts (remote files are
            passed to it unchecked).
        map_location: Device the tensors are mapped to.

    Returns:
        The file's :class:`CheckpointContents` (the same type for a full,
        an adapter-only, an official Swin or a bare state-dict file).

    Raises:
        CheckpointReadError: The local file does not exist, is empty, is
            truncated, or cannot be unpickled; the message names the file.
        CheckpointMismatchError: It holds no dict.
    """
    path = os.fspath(path)
    if not is_remote(path):
        path = osp.expanduser(path)
    return checkpoint_contents(_load_object(path, map_location), path)

