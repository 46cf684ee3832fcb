"""PASCAL_MT (PASCAL-Context multi-task) as an mmengine dataset.

Reads the PASCAL_MT layout of docs/datasets.md and never writes into
``data_root``: the has-human-parts flags come from the shipped
``ImageSets/Parts/<split>.txt`` cache when it covers the split, otherwise they
are computed from the ``.mat`` files (and optionally cached in ``cache_dir``).
:class:`~ditask_mm.datasets.base_multitask.BaseMultiTaskDataset` holds what
PASCAL_MT and NYUD_MT share.
"""
import hashlib
import json
import os
import os.path as osp
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.logging import print_log

from ..registry import DATASETS
from .base_multitask import BaseMultiTaskDataset, DirectoryIndex, SplitArg
from .constants import PARTS_CLASSES, PARTS_PALETTE, PASCAL_CLASSES, PASCAL_PALETTE, PASCAL_TASKS
from .pascal_parts import MalformedFileError, has_human_parts, object_classes, read_parts_annotation


@DATASETS.register_module()
class PascalContextMTLDataset(BaseMultiTaskDataset):
    """PASCAL-Context multi-task (PASCAL_MT): semseg, human parts, saliency, normals, edges.

    Entry keys: ``img_path``, ``img_id``, ``seg_fields``, ``reduce_zero_label``
    and, per enabled task, ``sem_seg_path`` (``semseg/VOC12`` when that file
    exists, else ``semseg/pascal-context``); ``human_parts_path`` and
    ``has_human_parts``; ``saliency_path``; ``normals_path`` and
    ``normals_label_map_path``; ``edge_label_map_path``.

    Args:
        cache_dir: Where to cache the has-human-parts flags computed from the
            ``.mat`` files (never inside ``data_root``). None: no cache.
        parts_only_filter: When ``human_parts`` is the only task, drop the
            images without the flag (the reference behaviour).
        **kwargs: See :class:`~ditask_mm.datasets.base_multitask.BaseMultiTaskDataset`.
    """

    METAINFO = dict(classes=PASCAL_CLASSES, palette=PASCAL_PALETTE.tolist(),
                    parts_classes=PARTS_CLASSES, parts_palette=PARTS_PALETTE.tolist())
    AVAILABLE_TASKS = PASCAL_TASKS
    DEFAULT_TASKS = ('semseg', 'human_parts', 'sal', 'normals')
    SPLIT_DIR = osp.join('ImageSets', 'Context')
    LAYOUT = ('a PASCAL_MT directory with JPEGImages/<id>.jpg, ImageSets/Context/<split>.txt, '
              'semseg/pascal-context/<id>.png (or semseg/VOC12/<id>.png), human_parts/<id>.mat, '
              'sal_distill/<id>.png, normals_distill/<id>.png and pascal-context/trainval/<id>.mat')

    def __init__(self, data_root: str, split: SplitArg = 'train', tasks: Optional[Sequence[str]] = None,
                 pipeline: Sequence = (), cache_dir: Optional[str] = None, parts_only_filter: bool = True,
                 **kwargs) -> None:
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.parts_only_filter = parts_only_filter
        if self.cache_dir is not None and osp.isdir(os.fspath(data_root)):
            root, cache = osp.realpath(os.fspath(data_root)), osp.realpath(self.cache_dir)
            if cache == root or cache.startswith(root + os.sep):
                raise ValueError(f'cache_dir {self.cache_dir!r} is inside data_root {data_root!r}; '
                                 'the dataset never writes into data_root')
        super().__init__(data_root, split, tasks, pipeline, **kwargs)

    def _entries(self, ids: List[str]) -> Tuple[List[dict], List[str]]:
        index = DirectoryIndex()
        entries, required = [], []
        for img_id in ids:
            entry = self.base_entry(self.path('JPEGImages', f'{img_id}.jpg'), img_id)
            required.append(entry['img_path'])
            label_map = self.path('pascal-context', 'trainval', f'{img_id}.mat')
            if 'semseg' in self.tasks:
                voc = self.path('semseg', 'VOC12', f'{img_id}.png')
                entry['sem_seg_path'] = voc if index.has(voc) else self.path('semseg', 'pascal-context',
                                                                             f'{img_id}.png')
            if 'human_parts' in self.tasks:
                entry['human_parts_path'] = self.path('human_parts', f'{img_id}.mat')
            if 'sal' in self.tasks:
                entry['saliency_path'] = self.path('sal_distill', f'{img_id}.png')
            if 'normals' in self.tasks:
                entry['normals_path'] = self.path('normals_distill', f'{img_id}.png')
                entry['normals_label_map_path'] = label_map
            if 'edge' in self.tasks:
                entry['edge_label_map_path'] = label_map
            required.extend(v for k, v in entry.items() if k.endswith('_path') and k != 'img_path')
            entries.append(entry)
        return entries, list(dict.fromkeys(required))

    def _finish(self, entries: List[dict]) -> List[dict]:
        if 'human_parts' not in self.tasks:
            return entries
        classes = self.parts_classes([e['img_id'] for e in entries])
        for entry in entries:
            entry['has_human_parts'] = has_human_parts(classes[entry['img_id']])
        flagged = sum(e['has_human_parts'] for e in entries)
        if self.tasks == ('human_parts',) and self.parts_only_filter:
            entries = [e for e in entries if e['has_human_parts']]
            print_log(f'{type(self).__name__}({self.split_name}): human_parts only, kept the {flagged} '
                      'images with human parts', logger='current')
        else:
            print_log(f'{type(self).__name__}({self.split_name}): {flagged} images with human parts',
                      logger='current')
        return entries

    # ------------------------------------------------------------------ parts flags
    @property
    def parts_cache_file(self) -> str:
        """The reference's cache, ``ImageSets/Parts/<split>.txt`` (JSON); read, never written."""
        return self.path('ImageSets', 'Parts', f'{self.split_name}.txt')

    @property
    def own_cache_file(self) -> Optional[str]:
        """This dataset's cache in ``cache_dir``, keyed by data_root and split."""
        if self.cache_dir is None:
            return None
        digest = hashlib.sha1(osp.realpath(self.data_root).encode()).hexdigest()[:12]
        return osp.join(self.cache_dir, f'pascal_parts_{self.split_name}_{digest}.json')

    @staticmethod
    def read_classes_cache(path: str) -> Dict[str, List[int]]:
        """A Parts cache: JSON ``{id: [class_ind or -1, ...]}``; malformed → error naming the file."""
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            raise MalformedFileError(f'{path}: not valid JSON ({exc}); expected the Parts cache '
                                     '{"<id>": [class_ind or -1 per object], ...}') from exc
        ok = isinstance(data, dict) and all(
            isinstance(v, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in v)
            for v in data.values())
        if not ok:
            raise MalformedFileError(f'{path}: expected a JSON object mapping each image id to a list of '
                                     'integer class indices (-1 for empty objects)')
        return {str(k): v for k, v in data.items()}

    def parts_classes(self, ids: List[str]) -> Dict[str, List[int]]:
        """Per image, the class list that decides ``has_human_parts``."""
        classes: Dict[str, List[int]] = {}
        for cache in (self.parts_cache_file, self.own_cache_file):
            if cache and osp.isfile(cache):
                found = self.read_classes_cache(cache)
                classes.update({i: found[i] for i in ids if i in found and i not in classes})
        todo = [i for i in dict.fromkeys(ids) if i not in classes]
        if todo:
            print_log(f'{type(self).__name__}({self.split_name}): reading {len(todo)} human_parts .mat '
                      'files for the has-human-parts flags', logger='current')
            for img_id in todo:
                classes[img_id] = object_classes(read_parts_annotation(self.path('human_parts', f'{img_id}.mat')))
            self._write_own_cache({i: classes[i] for i in dict.fromkeys(ids)})
        return classes

    def _write_own_cache(self, classes: Dict[str, List[int]]) -> None:
        target = self.own_cache_file
        if target is None:
            return
        os.makedirs(self.cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix='.parts-', suffix='.json')
        try:
            with os.fdopen(fd, 'w', encoding='utf-8') as f:
                json.dump(classes, f)
            os.replace(tmp, target)
        except BaseException:
            if osp.exists(tmp):
                os.unlink(tmp)
            raise
