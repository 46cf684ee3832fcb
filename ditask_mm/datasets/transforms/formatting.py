"""Pack an image and every task's target into model inputs and a data sample."""
from typing import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from ...registry import TRANSFORMS
from ...tasks import TASKS

_GT_KEYS = {spec.gt_key: spec for spec in TASKS.values()}


@TRANSFORMS.register_module()
class PackMultiTaskInputs(BaseTransform):
    """Image to a ``(3, H, W)`` tensor; each ``gt_*`` to ``PixelData``.

    Targets get the dtype their task needs: int64 labels (``gt_sem_seg``,
    ``gt_human_parts``), float32 for binary maps, normals and depth; all
    become ``(C, H, W)``. Keys listed in ``seg_fields`` that are not task
    targets are an error, so nothing is dropped silently.

    Args:
        meta_keys: Result keys copied into the sample's metainfo.
    """

    def __init__(self,
                 meta_keys: Sequence[str] = ('img_path', 'img_id', 'ori_shape', 'img_shape', 'scale_factor',
                                             'flip', 'flip_direction', 'rotation', 'rotation_scale')) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        sample = SegDataSample()
        for key in results.get('seg_fields', []):
            if key not in _GT_KEYS:
                raise KeyError(f'seg_fields lists {key!r}, which is no task target '
                               f'(known: {sorted(_GT_KEYS)})')
            spec = _GT_KEYS[key]
            value = np.asarray(results[key])
            value = value[None] if value.ndim == 2 else value.transpose(2, 0, 1)
            tensor = torch.from_numpy(np.ascontiguousarray(value))
            tensor = tensor.long() if spec.is_label_map else tensor.float()
            sample.set_field(PixelData(data=tensor), key)
        sample.set_metainfo({k: results[k] for k in self.meta_keys if k in results})
        return dict(inputs=inputs, data_samples=sample)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(meta_keys={self.meta_keys})'
