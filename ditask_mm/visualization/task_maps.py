"""Render one task's prediction or target as an RGB ``uint8`` image.

Every function takes the map as stored in a data sample's ``PixelData``
(``(C, H, W)``, or ``(H, W)``), as a tensor or an array, and returns an
``(H, W, 3)`` ``uint8`` array in RGB order. Ignored or invalid pixels are
drawn in ``invalid_color`` (black by default):

==============  =========================================  =====================
kind            drawn as                                   invalid
==============  =========================================  =====================
labels          palette colour per class                   255
binary (sal)    ``inferno`` heat map of the probability     outside [0, 1] (255)
binary (edge)   grey level ``p · 255``                      outside [0, 1] (255)
vectors         ``(n + 1) / 2 · 255`` per channel           any channel 255, NaN
scalar (depth)  ``viridis`` over the valid (or given) range 0, 255, NaN
==============  =========================================  =====================

The palettes match the datasets' (``ditask_mm.datasets.constants``): PASCAL
semseg uses the 21 VOC colours, human parts the first 7 VOC colours, NYUD's
40 classes VOC colours 1..40 (black stays free for ignore).
"""
from typing import Optional, Sequence, Tuple, Union

import matplotlib
import numpy as np

from ..datasets.constants import NYUD_PALETTE, PARTS_PALETTE, PASCAL_PALETTE, voc_palette
from ..tasks import task_spec

try:  # torch is optional here: the functions also take numpy arrays
    import torch
except ImportError:  # pragma: no cover
    torch = None

ArrayLike = Union[np.ndarray, 'torch.Tensor']
Color = Tuple[int, int, int]
#: Value marking ignored pixels of label, binary and normal maps.
IGNORE_INDEX = 255
BLACK: Color = (0, 0, 0)


# The palettes are the datasets' (read-only ``(K, 3)`` RGB ``uint8`` arrays);
# ``NYUD_PALETTE`` (the 40 NYUD-v2 classes, VOC colours 1..40) is imported as is.
#: PASCAL 21-class semseg (0 = background, 15 = person → (192, 128, 128)).
VOC_PALETTE: np.ndarray = PASCAL_PALETTE
#: The 7 human-part classes: background, head, torso, upper/lower arms, upper/lower legs.
HUMAN_PARTS_PALETTE: np.ndarray = PARTS_PALETTE

#: Colormaps used for the continuous maps.
SALIENCY_CMAP = 'inferno'
DEPTH_CMAP = 'viridis'


def to_numpy(data: ArrayLike) -> np.ndarray:
    """A tensor (any device) or array as a numpy array."""
    if torch is not None and isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy()
    return np.asarray(data)


def _single_channel(data: ArrayLike, what: str) -> np.ndarray:
    array = to_numpy(data)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f'{what} must be (H, W) or (1, H, W), got shape {array.shape}')
    return array


def colormap_lut(name: str) -> np.ndarray:
    """A matplotlib colormap sampled at 256 levels, ``(256, 3)`` RGB ``uint8``."""
    values = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(values * 255).astype(np.uint8)


def apply_colormap(values: np.ndarray, valid: np.ndarray, cmap: str,
                   invalid_color: Color = BLACK) -> np.ndarray:
    """Colour values in [0, 1] with ``cmap``; pixels where ``valid`` is False get ``invalid_color``."""
    index = np.round(np.clip(np.nan_to_num(values.astype(np.float64)), 0.0, 1.0) * 255).astype(np.intp)
    rgb = colormap_lut(cmap)[index]
    rgb[~valid] = invalid_color
    return rgb


def label_palette(task: str, num_classes: Optional[int] = None) -> np.ndarray:
    """The palette of a label task.

    Args:
        task: ``'semseg'`` or ``'human_parts'``.
        num_classes: Classes of the model's head or the dataset: up to 21 gives
            the VOC palette, 40 the NYUD palette, more a longer VOC colour map.
    """
    if task == 'human_parts':
        return HUMAN_PARTS_PALETTE
    if num_classes is None or num_classes <= len(VOC_PALETTE):
        return VOC_PALETTE
    if num_classes == len(NYUD_PALETTE):
        return NYUD_PALETTE
    return voc_palette(num_classes + 1)[1:]


def colorize_labels(labels: ArrayLike, palette: Union[np.ndarray, Sequence[Color]],
                    invalid_color: Color = BLACK, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Colour a label map with ``palette``; ``ignore_index`` gets ``invalid_color``.

    Raises:
        ValueError: If a label other than ``ignore_index`` has no palette colour.
    """
    labels = _single_channel(labels, 'a label map').astype(np.int64)
    palette = np.asarray(palette, dtype=np.uint8)
    ignored = labels == ignore_index
    bad = (~ignored) & ((labels < 0) | (labels >= len(palette)))
    if bad.any():
        raise ValueError(f'label {int(labels[bad][0])} has no colour in a palette of {len(palette)} '
                         f'(ignore index {ignore_index})')
    rgb = palette[np.where(ignored, 0, labels)]
    rgb[ignored] = invalid_color
    return rgb


def colorize_probability(prob: ArrayLike, cmap: Optional[str] = SALIENCY_CMAP,
                         invalid_color: Color = BLACK) -> np.ndarray:
    """A probability map in [0, 1] as a heat map (``cmap``) or, with ``cmap=None``, grey levels.

    Values outside [0, 1] (the ignore value 255) and NaN are invalid.
    """
    prob = _single_channel(prob, 'a probability map').astype(np.float64)
    valid = np.isfinite(prob) & (prob >= 0) & (prob <= 1)
    if cmap is None:
        grey = np.round(np.where(valid, prob, 0.0) * 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        rgb[~valid] = invalid_color
        return rgb
    return apply_colormap(prob, valid, cmap, invalid_color)


def colorize_normals(normals: ArrayLike, invalid_color: Color = BLACK,
                     ignore_value: float = IGNORE_INDEX) -> np.ndarray:
    """Unit normals ``(3, H, W)`` as RGB ``(n + 1) / 2 · 255``.

    A pixel is invalid if any channel equals ``ignore_value`` or is not finite.
    """
    normals = to_numpy(normals).astype(np.float64)
    if normals.ndim != 3 or normals.shape[0] != 3:
        raise ValueError(f'normals must be (3, H, W), got shape {normals.shape}')
    invalid = (normals == ignore_value).any(axis=0) | ~np.isfinite(normals).all(axis=0)
    scaled = (np.clip(np.nan_to_num(normals), -1.0, 1.0) + 1.0) / 2.0 * 255.0
    rgb = np.round(scaled).astype(np.uint8).transpose(1, 2, 0).copy()
    rgb[invalid] = invalid_color
    return rgb


def colorize_depth(depth: ArrayLike, value_range: Optional[Tuple[float, float]] = None,
                   cmap: str = DEPTH_CMAP, invalid_color: Color = BLACK,
                   invalid_values: Sequence[float] = (0.0, IGNORE_INDEX)) -> np.ndarray:
    """A depth map with ``cmap`` from near (low end) to far.

    Args:
        depth: ``(H, W)`` or ``(1, H, W)`` depth in metres.
        value_range: ``(near, far)`` mapped to the ends of the colormap; by
            default the minimum and maximum of the valid pixels, so that the
            invalid value 0 does not squash the scale.
        cmap: Matplotlib colormap name.
        invalid_color: Colour of invalid pixels.
        invalid_values: Values marking invalid pixels (besides NaN and inf).
    """
    depth = _single_channel(depth, 'a depth map').astype(np.float64)
    valid = np.isfinite(depth)
    for value in invalid_values:
        valid &= depth != value
    if value_range is None:
        value_range = (float(depth[valid].min()), float(depth[valid].max())) if valid.any() else (0.0, 1.0)
    near, far = (float(v) for v in value_range)
    scaled = (depth - near) / (far - near) if far > near else np.zeros_like(depth)
    return apply_colormap(scaled, valid, cmap, invalid_color)


def render_task_map(task: str, data: ArrayLike, num_classes: Optional[int] = None,
                    depth_range: Optional[Tuple[float, float]] = None,
                    invalid_color: Color = BLACK) -> np.ndarray:
    """Render a prediction or target of ``task`` (see the module table).

    Args:
        task: A task of :mod:`ditask_mm.tasks`.
        data: The map, ``(C, H, W)`` or ``(H, W)``: labels for label tasks,
            probabilities (or 0/1 targets) for ``sal``/``edge``, unit vectors
            for ``normals``, metres for ``depth``.
        num_classes: Classes of a label task (chooses the semseg palette).
        depth_range: ``(near, far)`` for depth; default: the valid pixels'.
        invalid_color: Colour of ignored/invalid pixels.

    Returns:
        ``(H, W, 3)`` RGB ``uint8``.
    """
    spec = task_spec(task)
    if spec.kind == 'labels':
        return colorize_labels(data, label_palette(task, num_classes), invalid_color)
    if spec.kind == 'binary':
        return colorize_probability(data, None if task == 'edge' else SALIENCY_CMAP, invalid_color)
    if spec.kind == 'vectors':
        return colorize_normals(data, invalid_color)
    if spec.kind == 'scalar':
        return colorize_depth(data, depth_range, invalid_color=invalid_color)
    raise ValueError(f'no renderer for task {task!r} of kind {spec.kind!r}')  # pragma: no cover
