"""Read a checkpoint file, and say clearly why when it cannot be read.

``torch.load`` on a file that was cut off while being written (a full disk,
a job killed mid-save) fails with ``PytorchStreamReader failed reading zip
archive: failed finding central directory``, which names neither the file nor
the cause. :func:`load_checkpoint_file` turns every such failure into a
:class:`CheckpointReadError` that names the file, its size, whether it is
truncated, and which other checkpoints lie next to it.
"""
import glob
import os
import os.path as osp
from typing import Any, List, Optional

from mmengine.runner import CheckpointLoader

# torch.save writes a zip archive; its end-of-central-directory record is in
# the last 22 bytes plus a comment of at most 64 KiB.
_ZIP_LOCAL_HEADER = b'PK\x03\x04'
_ZIP_END_RECORD = b'PK\x05\x06'
_ZIP64_END_LOCATOR = b'PK\x06\x07'
_ZIP_TAIL_BYTES = 22 + 65535


class CheckpointReadError(RuntimeError):
    """A checkpoint file is missing, empty, truncated or otherwise unreadable."""


def _is_remote(path: str) -> bool:
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
    others = [p for p in glob.glob(osp.join(folder, '*.pth')) if osp.abspath(p) != osp.abspath(path)]
    return sorted(others, key=osp.getmtime, reverse=True)


def _unreadable(path: str, reason: str, err: Optional[BaseException] = None) -> CheckpointReadError:
    others = sibling_checkpoints(path) if osp.isfile(path) else []
    advice = (f' Other checkpoints in its folder, newest first: {", ".join(osp.basename(p) for p in others[:4])}.'
              if others else '')
    detail = f' ({type(err).__name__}: {err})' if err is not None else ''
    return CheckpointReadError(
        f'checkpoint {path} cannot be read: {reason}{detail}. It was probably cut off while being written '
        f'(a full disk or a killed job); use an earlier checkpoint or write this one again.{advice}')


def load_checkpoint_file(path: str, map_location: Any = 'cpu') -> Any:
    """``CheckpointLoader.load_checkpoint(path)`` with a clear error when the file is bad.

    Args:
        path: Local file, or any URI mmengine's ``CheckpointLoader`` accepts
            (remote ones are passed through unchecked).
        map_location: As for ``torch.load``.

    Returns:
        Whatever the file holds (usually a dict).

    Raises:
        CheckpointReadError: The local file does not exist, is empty, is
            truncated, or cannot be unpickled; the message names the file.
    """
    path = os.fspath(path)
    if _is_remote(path):
        return CheckpointLoader.load_checkpoint(path, map_location=map_location)
    if not osp.isfile(path):
        raise CheckpointReadError(f'checkpoint {path} does not exist')
    problem = truncation_problem(path)
    if problem is not None:
        raise _unreadable(path, problem)
    try:
        return CheckpointLoader.load_checkpoint(path, map_location=map_location)
    except Exception as err:  # zip reader errors, UnpicklingError, EOFError, ...
        raise _unreadable(path, 'it is corrupt or not a PyTorch checkpoint', err) from err
