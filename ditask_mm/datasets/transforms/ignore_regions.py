"""Mark invalid target pixels with the ignore value, after all geometry.

As the reference ``AddIgnoreRegions`` (``docs/method.md`` §9, step 4):

* normals: zero vectors (invalid classes, exposed borders) → 255 in all
  three channels;
* human parts: an all-zero map (no usable person, or the person pushed out of
  frame by augmentation) → all 255, so the image does not count;
* depth: 0 → 255.
"""
import numpy as np
from mmcv.transforms import BaseTransform

from ...registry import TRANSFORMS

IGNORE = 255


@TRANSFORMS.register_module()
class AddIgnoreRegions(BaseTransform):
    """Turn invalid target pixels into 255 (see the module docstring)."""

    def transform(self, results: dict) -> dict:
        if 'gt_normals' in results:
            normals = results['gt_normals'].astype(np.float32, copy=True)
            normals[np.linalg.norm(normals, axis=-1) == 0] = IGNORE
            results['gt_normals'] = normals
        if 'gt_human_parts' in results and not np.any(results['gt_human_parts']):
            results['gt_human_parts'] = np.full_like(results['gt_human_parts'], IGNORE)
        if 'gt_depth' in results:
            depth = results['gt_depth'].astype(np.float32, copy=True)
            depth[depth == 0] = IGNORE
            results['gt_depth'] = depth
        return results
