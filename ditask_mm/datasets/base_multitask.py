"""``BaseMultiTaskDataset``: what the PASCAL_MT and NYUD_MT datasets share.

Task selection, split files, fail-fast file checks and sample errors; the
subclasses (:class:`~ditask_mm.datasets.PascalContextMTLDataset`,
:class:`~ditask_mm.datasets.NYUDMTLDataset`) describe their layout and list
each image's files. See docs/datasets.md.
"""
import abc
import os
import os.path as osp
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from ..tasks import TASKS
from .sample_errors import SampleErrorsMixin

__all__ = ['BaseMultiTaskDataset', 'DirectoryIndex', 'SplitArg']

SplitArg = Union[str, Sequence[str]]
_MAX_LISTED = 5


class DirectoryIndex:
    """Names in a directory, listed once (cheaper than one stat per file)."""

    def __init__(self) -> None:
        self._names: Dict[str, frozenset] = {}

    def has(self, path: str) -> bool:
        folder, name = osp.split(path)
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError):
                self._names[folder] = frozenset()
        return name in self._names[folder]


class BaseMultiTaskDataset(SampleErrorsMixin, BaseDataset, metaclass=abc.ABCMeta):
    """Shared plumbing: task selection, split files, fail-fast file checks, sample errors.

    A sample whose image cannot be decoded raises
    :class:`~ditask_mm.datasets.sample_errors.CorruptImageError` naming the
    file, the index and the split; no sample is ever skipped (see
    :mod:`ditask_mm.datasets.sample_errors`).

    Subclasses set ``METAINFO``, ``AVAILABLE_TASKS``, ``SPLIT_DIR`` and
    ``LAYOUT`` and implement :meth:`_entries`.

    Args:
        data_root: The dataset directory (e.g. ``data/PASCAL_MT``).
        split: Split name (``'train'``, ``'val'``…) or a list of names whose
            id lists are concatenated in sorted name order, as the public
            code (it sorts the list): ``['val', 'train']`` reads train, then
            val, and is named ``'trainval'``.
        tasks: Tasks to provide; None gives the dataset's default tasks.
        pipeline: Transforms; start with ``LoadImageFromFile`` and
            ``LoadMultiTaskAnnotations``.
        test_mode, metainfo, indices, serialize_data, lazy_init, max_refetch:
            As :class:`mmengine.dataset.BaseDataset`.
    """

    AVAILABLE_TASKS: Tuple[str, ...] = ()
    DEFAULT_TASKS: Tuple[str, ...] = ()
    SPLIT_DIR = ''
    LAYOUT = ''

    def __init__(self,
                 data_root: str,
                 split: SplitArg = 'train',
                 tasks: Optional[Sequence[str]] = None,
                 pipeline: Sequence = (),
                 test_mode: bool = False,
                 metainfo: Optional[dict] = None,
                 indices: Optional[Union[int, Sequence[int]]] = None,
                 serialize_data: bool = True,
                 lazy_init: bool = False,
                 max_refetch: int = 1000) -> None:
        self.tasks = self.resolve_tasks(tasks)
        splits = (split,) if isinstance(split, str) else tuple(split)
        if not splits or not all(isinstance(s, str) and s for s in splits):
            raise ValueError(f'{type(self).__name__}: split must be a name or a list of names, got {split!r}')
        self.splits = tuple(sorted(splits))
        data_root = os.fspath(data_root)
        if not osp.isdir(data_root):
            raise FileNotFoundError(f'{type(self).__name__}: data_root {data_root!r} does not exist '
                                    f'or is not a directory; expected {self.LAYOUT}')
        metainfo = dict(metainfo or {})
        metainfo['tasks'] = self.tasks
        super().__init__(ann_file='', metainfo=metainfo, data_root=data_root, data_prefix={},
                         indices=indices, serialize_data=serialize_data, pipeline=list(pipeline),
                         test_mode=test_mode, lazy_init=lazy_init, max_refetch=max_refetch)

    @property
    def split_name(self) -> str:
        """The reference's name for the split (``['train', 'val']`` → ``'trainval'``)."""
        return ''.join(self.splits)

    @classmethod
    def resolve_tasks(cls, tasks: Optional[Iterable[str]]) -> Tuple[str, ...]:
        """Validate a task subset against what the dataset provides."""
        tasks = cls.DEFAULT_TASKS if tasks is None else ((tasks,) if isinstance(tasks, str) else tuple(tasks))
        for task in tasks:
            if task not in cls.AVAILABLE_TASKS:
                kind = 'is not provided by' if task in TASKS else 'is an unknown task for'
                raise KeyError(f'{task!r} {kind} {cls.__name__}; its tasks are {list(cls.AVAILABLE_TASKS)}')
        if not tasks:
            raise ValueError(f'{cls.__name__}: no tasks given; choose from {list(cls.AVAILABLE_TASKS)}')
        if len(set(tasks)) != len(tasks):
            raise ValueError(f'{cls.__name__}: duplicate tasks {list(tasks)}')
        return tasks

    def path(self, *parts: str) -> str:
        return osp.join(self.data_root, *parts)

    def split_file(self, split: str) -> str:
        """The id list of one split, ``<data_root>/<SPLIT_DIR>/<split>.txt``."""
        return self.path(self.SPLIT_DIR, f'{split}.txt')

    def read_split_ids(self) -> List[str]:
        """Ids of the split files (sorted by split name), each in file order; blank lines are skipped."""
        ids: List[str] = []
        for split in self.splits:
            split_file = self.split_file(split)
            if not osp.isfile(split_file):
                folder = self.path(self.SPLIT_DIR)
                known = sorted(n[:-4] for n in os.listdir(folder) if n.endswith('.txt')) if osp.isdir(folder) else []
                raise FileNotFoundError(f'{type(self).__name__}: split file {split_file!r} not found '
                                        f'(splits in {folder!r}: {known}); expected one image id per line')
            with open(split_file, encoding='utf-8') as f:
                ids.extend(line.strip() for line in f.read().splitlines() if line.strip())
        return ids

    def check_files(self, required: List[str]) -> None:
        """Raise ``FileNotFoundError`` listing the first missing files, if any."""
        index = DirectoryIndex()
        missing = [p for p in required if not index.has(p)]
        if missing:
            listed = '\n  '.join(missing[:_MAX_LISTED])
            more = f'\n  ... and {len(missing) - _MAX_LISTED} more' if len(missing) > _MAX_LISTED else ''
            raise FileNotFoundError(
                f'{type(self).__name__}: {len(missing)} file(s) missing in {self.data_root!r} for split '
                f'{self.split_name!r} and tasks {list(self.tasks)}:\n  {listed}{more}\nexpected {self.LAYOUT}')

    def load_data_list(self) -> List[dict]:
        ids = self.read_split_ids()
        entries, required = self._entries(ids)
        self.check_files(required)
        entries = self._finish(entries)
        print_log(f'{type(self).__name__}({self.split_name}): {len(entries)} images, tasks {list(self.tasks)}',
                  logger='current')
        return entries

    @abc.abstractmethod
    def _entries(self, ids: List[str]) -> Tuple[List[dict], List[str]]:
        raise NotImplementedError

    def _finish(self, entries: List[dict]) -> List[dict]:
        return entries

    @staticmethod
    def base_entry(img_path: str, img_id: str) -> dict:
        return dict(img_path=img_path, img_id=img_id, seg_fields=[], reduce_zero_label=False)
