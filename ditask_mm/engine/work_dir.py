"""The checkpoints of a work dir: which one ``--resume`` continues from, which one is the last good one."""
import glob
import os.path as osp
import re
from typing import List, Optional, Tuple

_NUMBERED = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


def resume_candidates(work_dir: str) -> List[str]:
    """Checkpoints ``--resume`` may continue from, best first.

    The file ``last_checkpoint`` names (when it exists), then every
    ``epoch_N.pth`` / ``iter_N.pth`` of ``work_dir`` from the highest ``N``
    down. ``best_*`` checkpoints are not candidates: they are not the end of
    the run.
    """
    candidates = []
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker) as f:
            named = f.read().strip()
        if named:
            candidates.append(named if osp.isabs(named) else osp.join(work_dir, named))
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
    named = None
    if osp.isfile(record):
        with open(record, encoding='utf-8') as f:
            named = f.read().strip() or None
    stale = ''
    for index, path in enumerate(resume_candidates(work_dir)):
        if not osp.isfile(path):
            stale = f'{record} names {named!r}, which does not exist; '
            continue
        if index == 0 and named is not None:
            return path, f'named by {record}'
        return path, f'{stale}the newest epoch/iteration checkpoint in {work_dir}'
    return None, f'{stale}no checkpoint has been written yet in {work_dir}'
