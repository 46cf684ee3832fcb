"""Geometric augmentation that keeps every task's target consistent.

The public DiTASK/MTLoRA training pipeline (shared/docs/data-and-metrics.md
§3.1): a horizontal flip that negates n_x, one rotation in [−20°, 20°] and
one scale in [0.75, 1.25] about the image centre with zero-filled borders
(normals rotated in the image plane, depth divided by the scale), then an
anisotropic resize to a fixed size (normals renormalised).

Every transform acts on ``results['img']`` and on each key listed in
``results['seg_fields']``; it knows a target by its key (``gt_normals``,
``gt_depth``, labels otherwise), as in :mod:`ditask_mm.tasks`.
"""
import random
from typing import Sequence, Tuple, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from ...registry import TRANSFORMS

NORMALS_KEY = 'gt_normals'
DEPTH_KEY = 'gt_depth'


def interpolation_for(key: str) -> int:
    """cv2 interpolation of a key: cubic for the image and normals, nearest for the rest."""
    return cv2.INTER_CUBIC if key in ('img', NORMALS_KEY) else cv2.INTER_NEAREST


def renormalize(normals: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """``n / (‖n‖ + eps)`` per pixel; zero vectors stay zero."""
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    return (normals / (norm + eps)).astype(np.float32)


def target_keys(results: dict):
    return list(results.get('seg_fields', []))


@TRANSFORMS.register_module()
class RandomFlipMTL(BaseTransform):
    """Horizontal flip of the image and every target; negates n_x of normals.

    Args:
        prob: Flip probability.
    """

    def __init__(self, prob: float = 0.5) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        self.prob = prob

    def transform(self, results: dict) -> dict:
        flip = random.random() < self.prob
        results['flip'] = flip
        results['flip_direction'] = 'horizontal' if flip else None
        if not flip:
            return results
        for key in ['img', *target_keys(results)]:
            results[key] = np.ascontiguousarray(results[key][:, ::-1])
            if key == NORMALS_KEY:
                results[key][..., 0] *= -1
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(prob={self.prob})'


@TRANSFORMS.register_module()
class ScaleRotateMTL(BaseTransform):
    """One random rotation and scale about the image centre, size unchanged.

    Exposed borders are 0 for every key (black image; background labels; zero
    normals, which ``AddIgnoreRegions`` turns into ignore), as the reference.

    Args:
        rotation: ``(min, max)`` degrees, drawn uniformly; or a sequence of
            more than two values to choose from.
        scale: ``(min, max)`` drawn uniformly, or a sequence of more than two
            discrete choices (the NYUD recipe uses ``(1.0, 1.2, 1.5)``).
        scale_depth: Divide depth by the scale (objects come closer when
            zooming in).
    """

    def __init__(self,
                 rotation: Sequence[float] = (-20.0, 20.0),
                 scale: Sequence[float] = (0.75, 1.25),
                 scale_depth: bool = True) -> None:
        self.rotation = tuple(rotation)
        self.scale = tuple(scale)
        self.scale_depth = scale_depth

    @staticmethod
    def _draw(values: Tuple[float, ...]) -> float:
        if len(values) == 2:
            return random.uniform(*values)
        return random.choice(values)

    def transform(self, results: dict) -> dict:
        angle, scale = self._draw(self.rotation), self._draw(self.scale)
        height, width = results['img'].shape[:2]
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
        for key in ['img', *target_keys(results)]:
            value = results[key]
            if key == NORMALS_KEY:
                value = self.rotate_normals(value, angle)
            warped = cv2.warpAffine(value, matrix, (width, height), flags=interpolation_for(key),
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            if key == DEPTH_KEY and self.scale_depth:
                warped = warped / scale
            results[key] = warped.astype(value.dtype, copy=False)
        results['rotation'], results['rotation_scale'] = angle, scale
        return results

    @staticmethod
    def rotate_normals(normals: np.ndarray, angle: float) -> np.ndarray:
        """Rotate the in-plane components by ``angle`` degrees (reference convention)."""
        out = normals.astype(np.float32, copy=True)
        phi = np.arctan2(normals[..., 0], normals[..., 1])
        radius = np.hypot(normals[..., 0], normals[..., 1])
        out[..., 0] = radius * np.sin(phi + np.deg2rad(angle))
        out[..., 1] = radius * np.cos(phi + np.deg2rad(angle))
        return out

    def __repr__(self) -> str:
        return f'{type(self).__name__}(rotation={self.rotation}, scale={self.scale})'


@TRANSFORMS.register_module()
class FixedResizeMTL(BaseTransform):
    """Resize image and targets to exactly ``size`` (aspect ratio not kept).

    Args:
        size: ``(height, width)``; the public code uses 448×448.
        resize_targets: Also resize the targets. ``True`` for training and for
            the reference evaluation protocol (scores against targets resized
            to ``size``); ``False`` to evaluate at the original resolution.
        eval_at_resized: Set ``ori_shape`` to ``size`` so that predictions are
            produced (and scored) at the resized resolution: the reference
            protocol. Needs ``resize_targets``.
    """

    def __init__(self, size: Union[int, Sequence[int]] = (448, 448), resize_targets: bool = True,
                 eval_at_resized: bool = False) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if eval_at_resized and not resize_targets:
            raise ValueError('eval_at_resized=True needs resize_targets=True')
        self.resize_targets = resize_targets
        self.eval_at_resized = eval_at_resized

    def transform(self, results: dict) -> dict:
        height, width = self.size
        old_h, old_w = results['img'].shape[:2]
        keys = ['img', *(target_keys(results) if self.resize_targets else [])]
        for key in keys:
            value = cv2.resize(results[key], (width, height), interpolation=interpolation_for(key))
            results[key] = renormalize(value) if key == NORMALS_KEY else value
        results['img_shape'] = (height, width)
        results['scale_factor'] = (width / old_w, height / old_h)
        if self.eval_at_resized:
            results['ori_shape'] = (height, width)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, resize_targets={self.resize_targets})'
