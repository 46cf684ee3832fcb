"""mmseg-style random resize and crop for multi-task targets.

An alternative to the reference pipeline (as the ATRC/InvPT line of code
trains; ``docs/method.md`` §9). Both transforms keep normals
consistent (nearest resampling: vectors stay unit length and validity stays
sharp), scale depth with the zoom, and pad every target with its own value.
For photometric augmentation use mmseg's ``PhotoMetricDistortion`` as is: it
changes only the image.
"""
import random
from typing import Sequence, Tuple, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from ...registry import TRANSFORMS
from .geometric import DEPTH_KEY, target_keys

#: Pad values used when a crop is larger than the image (before AddIgnoreRegions).
CROP_PAD = {'img': 0, 'gt_normals': 0, 'gt_depth': 0}
LABEL_PAD = 255


@TRANSFORMS.register_module()
class RandomResizeMTL(BaseTransform):
    """Resize by a random ratio of ``scale``, keeping the aspect ratio.

    Args:
        scale: ``(long side, short side)`` target before the ratio, as mmseg.
        ratio_range: ``(min, max)`` ratio drawn uniformly.
        scale_depth: Divide depth by the zoom factor.
    """

    def __init__(self, scale: Sequence[int] = (2048, 512), ratio_range: Tuple[float, float] = (0.5, 2.0),
                 scale_depth: bool = True) -> None:
        self.scale = tuple(scale)
        self.ratio_range = tuple(ratio_range)
        self.scale_depth = scale_depth

    def transform(self, results: dict) -> dict:
        ratio = random.uniform(*self.ratio_range)
        long_side, short_side = max(self.scale) * ratio, min(self.scale) * ratio
        height, width = results['img'].shape[:2]
        factor = min(long_side / max(height, width), short_side / min(height, width))
        new_h, new_w = max(1, int(round(height * factor))), max(1, int(round(width * factor)))
        results['img'] = cv2.resize(results['img'], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        for key in target_keys(results):
            value = cv2.resize(results[key], (new_w, new_h), interpolation=cv2.INTER_NEAREST)
            if key == DEPTH_KEY and self.scale_depth:
                value = np.where(value > 0, value / factor, value).astype(value.dtype)
            results[key] = value
        results['img_shape'] = (new_h, new_w)
        results['scale_factor'] = (new_w / width, new_h / height)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(scale={self.scale}, ratio_range={self.ratio_range})'


@TRANSFORMS.register_module()
class RandomCropMTL(BaseTransform):
    """Random crop of ``crop_size``; pads first when the image is smaller.

    Args:
        crop_size: ``(height, width)``.
        cat_max_ratio: Retry (up to 10 times) crops in which one semseg class
            covers more than this share of the valid pixels (mmseg's rule).
        ignore_index: Label ignored by ``cat_max_ratio``.
    """

    def __init__(self, crop_size: Union[int, Sequence[int]], cat_max_ratio: float = 1.0,
                 ignore_index: int = 255) -> None:
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def _pad(self, results: dict) -> None:
        height, width = results['img'].shape[:2]
        pad_h, pad_w = max(self.crop_size[0] - height, 0), max(self.crop_size[1] - width, 0)
        if not (pad_h or pad_w):
            return
        for key in ['img', *target_keys(results)]:
            value = CROP_PAD.get(key, LABEL_PAD)
            results[key] = cv2.copyMakeBorder(results[key], 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=value)

    def _bbox(self, height: int, width: int) -> Tuple[int, int, int, int]:
        top = random.randint(0, height - self.crop_size[0])
        left = random.randint(0, width - self.crop_size[1])
        return top, top + self.crop_size[0], left, left + self.crop_size[1]

    def transform(self, results: dict) -> dict:
        self._pad(results)
        height, width = results['img'].shape[:2]
        bbox = self._bbox(height, width)
        if self.cat_max_ratio < 1.0 and 'gt_sem_seg' in results:
            for _ in range(10):
                crop = results['gt_sem_seg'][bbox[0]:bbox[1], bbox[2]:bbox[3]]
                labels, counts = np.unique(crop[crop != self.ignore_index], return_counts=True)
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                bbox = self._bbox(height, width)
        top, bottom, left, right = bbox
        for key in ['img', *target_keys(results)]:
            results[key] = np.ascontiguousarray(results[key][top:bottom, left:right])
        results['img_shape'] = self.crop_size
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio})'
