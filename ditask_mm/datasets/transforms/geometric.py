"""Geometric augmentation that keeps every task's target consistent.

The public DiTASK/MTLoRA training pipeline (``docs/method.md``
§9): a horizontal flip that negates n_x, one rotation in [−20°, 20°] and
one scale in [0.75, 1.25] about the image centre with zero-filled borders
(normals rotated in the image plane, depth divided by the scale), then an
anisotropic resize to a fixed size (normals renormalised in float64).
The image is resized in float64 and cast to uint8 once, by the rule that
``FixedResizeMTL(image_cast=...)`` names (:mod:`.image_cast`).

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
from .image_cast import ROUND_CLIP, cast_image_to_uint8, check_image_cast

NORMALS_KEY = 'gt_normals'
DEPTH_KEY = 'gt_depth'
#: float64 machine epsilon (``np.finfo(float).eps``), the public code's renormalisation eps.
FLOAT64_EPS = float(np.finfo(np.float64).eps)


def interpolation_for(key: str) -> int:
    """cv2 interpolation of a key: cubic for the image and normals, nearest for the rest."""
    return cv2.INTER_CUBIC if key in ('img', NORMALS_KEY) else cv2.INTER_NEAREST


def renormalize(normals: np.ndarray, eps: float = FLOAT64_EPS) -> np.ndarray:
    """``n / (‖n‖ + eps)`` per pixel in float64, as the public code; zero vectors stay zero.

    The norm is ``sqrt(n_x² + n_y² + n_z²)``. With the float64 eps a
    non-zero vector keeps (almost) unit length even when cubic resampling next
    to an invalid (zero) region made it tiny; a larger eps shrinks such vectors.

    Args:
        normals: ``(H, W, 3)`` vectors, any float dtype.
        eps: Added to the norm.

    Returns:
        The renormalised ``(H, W, 3)`` float64 vectors.
    """
    vectors = np.asarray(normals, dtype=np.float64)
    norm = np.sqrt(vectors[..., 0] ** 2 + vectors[..., 1] ** 2 + vectors[..., 2] ** 2) + eps
    return vectors / norm[..., None]


def target_keys(results: dict) -> list:
    """The target keys of ``results`` (its ``seg_fields``)."""
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

    Per key, as the public code's validation (and training) resize: the image
    cubic, in float64, then cast to uint8 by ``image_cast``; normals cubic in
    float64, renormalised with :func:`renormalize` (float64 eps) and stored as
    float32; every other target nearest, in its own dtype.

    Args:
        size: ``(height, width)``; the public code uses 448×448.
        resize_targets: Also resize the targets. ``True`` for training and for
            the reference evaluation protocol (scores against targets resized
            to ``size``); ``False`` to evaluate at the original resolution.
        eval_at_resized: Set ``ori_shape`` to ``size`` so that predictions are
            produced (and scored) at the resized resolution: the reference
            protocol. Needs ``resize_targets``.
        image_cast: How the float64 cubic result becomes uint8:
            ``'truncate_wrap'`` reproduces the public code's
            ``astype(np.uint8)`` (truncation; overshoot below 0 or above 255
            wraps around modulo 256); ``'round_clip'`` rounds half to even and
            clips to [0, 255]. See :mod:`ditask_mm.datasets.transforms.image_cast`.
    """

    def __init__(self, size: Union[int, Sequence[int]] = (448, 448), resize_targets: bool = True,
                 eval_at_resized: bool = False, image_cast: str = ROUND_CLIP) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if eval_at_resized and not resize_targets:
            raise ValueError('eval_at_resized=True needs resize_targets=True')
        self.resize_targets = resize_targets
        self.eval_at_resized = eval_at_resized
        self.image_cast = check_image_cast(image_cast)

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        """Cubic resize of the float64 image, then the ``image_cast`` rule to uint8."""
        height, width = self.size
        resized = cv2.resize(np.asarray(image, dtype=np.float64), (width, height), interpolation=cv2.INTER_CUBIC)
        return cast_image_to_uint8(resized, self.image_cast)

    def resize_normals(self, normals: np.ndarray) -> np.ndarray:
        """Cubic resize of the float64 normals, renormalised, as float32."""
        height, width = self.size
        resized = cv2.resize(np.asarray(normals, dtype=np.float64), (width, height),
                             interpolation=cv2.INTER_CUBIC)
        return renormalize(resized).astype(np.float32)

    def transform(self, results: dict) -> dict:
        height, width = self.size
        old_h, old_w = results['img'].shape[:2]
        results['img'] = self.resize_image(results['img'])
        targets = target_keys(results) if self.resize_targets else []
        for key in targets:
            if key == NORMALS_KEY:
                results[key] = self.resize_normals(results[key])
            else:
                results[key] = cv2.resize(results[key], (width, height), interpolation=interpolation_for(key))
        results['img_shape'] = (height, width)
        results['scale_factor'] = (width / old_w, height / old_h)
        if self.eval_at_resized:
            results['ori_shape'] = (height, width)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, resize_targets={self.resize_targets}, '
                f'image_cast={self.image_cast!r})')
