"""NYUD_MT (NYUD-v2 multi-task, the ``NYUD_MT.tgz`` Google-Drive archive) as an mmengine dataset.

Layout (docs/datasets.md): ``gt_sets/<split>.txt``,
``images/<id>.jpg``, ``segmentation/<id>.png`` (0 = unlabeled, 1..40),
``depth/<id>.npy`` (metres, 0 = invalid), ``normals/<id>.npy`` (HxWx3, zero
vector = invalid) and ``edge/<id>.npy`` ({0,1}). The other NYUD archives
store different formats and are not read.
"""
import os.path as osp
from typing import List, Tuple

from ..registry import DATASETS
from .constants import NYUD_CLASSES, NYUD_PALETTE, NYUD_TASKS
from .base_multitask import BaseMultiTaskDataset


@DATASETS.register_module()
class NYUDMTLDataset(BaseMultiTaskDataset):
    """NYUD-v2 multi-task: semseg (40 classes), depth, normals, edges.

    Entry keys: ``img_path``, ``img_id``, ``seg_fields``, ``reduce_zero_label``
    (False: mmseg's own shift must not run) and, per enabled task,
    ``sem_seg_path`` with ``sem_seg_reduce_zero=True`` (the loader maps
    0 → 255 and k → k−1), ``depth_path``, ``normals_path``, ``edge_path``.

    Args: see :class:`~ditask_mm.datasets.base_multitask.BaseMultiTaskDataset`.
    """

    METAINFO = dict(classes=NYUD_CLASSES, palette=NYUD_PALETTE.tolist())
    AVAILABLE_TASKS = NYUD_TASKS
    DEFAULT_TASKS = NYUD_TASKS
    SPLIT_DIR = 'gt_sets'
    LAYOUT = ('a NYUD_MT directory with gt_sets/<split>.txt, images/<id>.jpg, segmentation/<id>.png, '
              'depth/<id>.npy, normals/<id>.npy and edge/<id>.npy')

    _SOURCES = {
        'semseg': ('sem_seg_path', 'segmentation', '.png'),
        'depth': ('depth_path', 'depth', '.npy'),
        'normals': ('normals_path', 'normals', '.npy'),
        'edge': ('edge_path', 'edge', '.npy'),
    }

    def _entries(self, ids: List[str]) -> Tuple[List[dict], List[str]]:
        entries, required = [], []
        for img_id in ids:
            entry = self.base_entry(self.path('images', f'{img_id}.jpg'), img_id)
            required.append(entry['img_path'])
            for task in self.tasks:
                key, folder, ext = self._SOURCES[task]
                entry[key] = osp.join(self.data_root, folder, f'{img_id}{ext}')
                required.append(entry[key])
            if 'semseg' in self.tasks:
                entry['sem_seg_reduce_zero'] = True
            entries.append(entry)
        return entries, required
