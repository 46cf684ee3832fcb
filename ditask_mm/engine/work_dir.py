"""The checkpoints of a work dir: which one ``--resume`` continues from, which one is the last good one."""
import glob
import os.path as osp
import re
from typing import List, Optional, Tuple

_NUMBERED = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def last_checkpoint_record(work_dir: str) -> Optional[str]:
    """The checkpoint path ``<work_dir>/last_checkpoint`` names (mmengine's record of the latest save), or None."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        return None
    with open(marker, encoding='utf-8') as f:
        named = f.read().strip()
    if not named:
        return None
    return named if osp.isabs(named) else osp.join(work_dir, named)


def resume_candidates(work_dir: str) -> List[str]:
    """Checkpoints ``--resume`` may continue from, best first.

    The file ``last_checkpoint`` names (when it exists), then every
    ``epoch_N.pth`` / ``iter_N.pth`` of ``work_dir`` from the highest ``N``
    down. ``best_*`` checkpoints are not candidates: they are not the end of
    the run.
    """
    named = last_checkpoint_record(work_dir)
    candidates = [named] if named else []
    numbered = []
    for path in glob.glob(osp.join(glob.escape(work_dir), '*.pth')):
        match = _NUMBERED.match(osp.basename(path))
        if match:
            numbered.append((int(match.group(2)), path))
    candidates += [path for _, path in sorted(numbered, reverse=True)]
    seen, unique = set(), []
    for path in candidates:
        key = osp.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def last_good_checkpoint(work_dir: str) -> Tuple[Optional[str], str]:
    """The checkpoint to go back to in ``work_dir``, and how it was found.

    The first existing file of :func:`resume_candidates`: the one
    ``<work_dir>/last_checkpoint`` names (mmengine's record of the latest
    save), else the highest-numbered ``epoch_N.pth`` / ``iter_N.pth``.

    Returns:
        ``(path or None, description)``; without a checkpoint the
        description reads ``'no checkpoint has been written yet in <dir>'``.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    named = last_checkpoint_record(work_dir)
    stale = ''
    for path in resume_candidates(work_dir):
        if not osp.isfile(path):
            stale = f'{record} names {named!r}, which does not exist; '
            continue
        if path == named:
            return path, f'named by {record}'
        return path, f'{stale}the newest epoch/iteration checkpoint in {work_dir}'
    return None, f'{stale}no checkpoint has been written yet in {work_dir}'
