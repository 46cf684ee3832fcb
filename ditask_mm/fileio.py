"""Files written so that they are either the old version or the complete new one.

A write that stops half-way (a full disk, a killed job) must not leave a
truncated file where a complete one was: checkpoints, prediction pickles,
metrics and pictures are written to a temporary file in the same folder,
``fsync``-ed and renamed onto their name (``os.replace`` is atomic on POSIX
file systems).
"""
import contextlib
import io
import os
import os.path as osp
import uuid
from pathlib import Path
from typing import Any, Union


def atomic_write_bytes(data: bytes, filepath: Union[str, Path]) -> None:
    """Write ``data`` to ``filepath`` so that the file is either the old one or the complete new one.

    Raises:
        OSError: The write failed (for example no space left); the message
            names the file, and nothing of the new content is left on disk.
    """
    filepath = os.fspath(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f'.{osp.basename(filepath)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    try:
        with open(tmp, 'xb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError):
            raise OSError(err.errno, f'could not write {filepath} ({len(data):,} bytes): {err.strerror}; the '
                          'previous file of that name, if any, is unchanged') from err
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(text: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded with ``encoding``."""
    atomic_write_bytes(text.encode(encoding), filepath)


def atomic_torch_save(obj: Any, filepath: Union[str, Path]) -> None:
    """``torch.save(obj, filepath)``, atomically."""
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(buffer.getvalue(), filepath)
