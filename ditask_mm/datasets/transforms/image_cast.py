"""How a float image (values about 0..255) becomes the uint8 image the model sees.

The public DiTASK/MTLoRA pipeline keeps the image in float64 through every
geometric step (flip, rotation/scale, the fixed cubic resize) and casts once,
in ``ToTensor``, with ``image.astype(np.uint8)``. Cubic interpolation
overshoots [0, 255] next to sharp edges, and on x86-64 numpy that cast
truncates towards zero and keeps the low byte of the integer, so overshoot
wraps around (−1.5 → 255, 256.2 → 0, 511.7 → 255). Numpy does not define
out-of-range float→uint8 casts (other platforms saturate), so
:func:`truncate_wrap_to_uint8` spells the modular rule out.

Two casts are offered (:data:`IMAGE_CASTS`):

* ``'truncate_wrap'``: the public code's result, for models trained or
  evaluated on its inputs;
* ``'round_clip'``: round half to even, then clip to [0, 255].

:class:`ImageToFloat64` converts the loaded uint8 image to float64, so that the
geometric transforms after it work on unrounded values as the public code does.
"""
from typing import Callable, Dict

import numpy as np
from mmcv.transforms import BaseTransform

from ...registry import TRANSFORMS

TRUNCATE_WRAP = 'truncate_wrap'
ROUND_CLIP = 'round_clip'


def truncate_wrap_to_uint8(values: np.ndarray) -> np.ndarray:
    """Truncate towards zero, then keep the integer modulo 256 (two's-complement low byte).

    Equals x86-64 numpy's ``values.astype(np.uint8)`` for finite float64 values
    with ``|v| < 2**31`` (a cubic resize of 0..255 data stays far inside that),
    on every platform.

    Args:
        values: Finite float array.

    Returns:
        A uint8 array of the same shape.
    """
    integers = np.trunc(np.asarray(values, dtype=np.float64)).astype(np.int64)
    return np.bitwise_and(integers, 0xFF).astype(np.uint8)


def round_clip_to_uint8(values: np.ndarray) -> np.ndarray:
    """Round half to even (``np.rint``), then clip to [0, 255].

    Args:
        values: Float array.

    Returns:
        A uint8 array of the same shape.
    """
    return np.clip(np.rint(np.asarray(values, dtype=np.float64)), 0, 255).astype(np.uint8)


_CASTS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    TRUNCATE_WRAP: truncate_wrap_to_uint8,
    ROUND_CLIP: round_clip_to_uint8,
}
#: The accepted values of ``image_cast`` (see the module docstring).
IMAGE_CASTS = tuple(_CASTS)


def check_image_cast(image_cast: str) -> str:
    """Return ``image_cast`` if it names a cast, else raise ``ValueError`` listing the choices."""
    if image_cast not in _CASTS:
        raise ValueError(f'image_cast must be one of {list(IMAGE_CASTS)}, got {image_cast!r}')
    return image_cast


def cast_image_to_uint8(values: np.ndarray, image_cast: str) -> np.ndarray:
    """Cast a float image to uint8 with the named rule (``'truncate_wrap'`` or ``'round_clip'``)."""
    return _CASTS[check_image_cast(image_cast)](values)


@TRANSFORMS.register_module()
class ImageToFloat64(BaseTransform):
    """Convert ``results['img']`` to float64 (values unchanged).

    Place it after loading and before the geometric transforms to reproduce
    the public training pipeline, which flips, rotates and scales the float64
    image without rounding; a ``FixedResizeMTL`` at the end casts it back to
    uint8. Without it the uint8 image is rounded and saturated after each
    interpolating step.
    """

    def transform(self, results: dict) -> dict:
        results['img'] = np.asarray(results['img']).astype(np.float64)
        return results
