"""Side-by-side panels: the input image, then one tile per task.

A panel has one row of predictions and, optionally, a second row with the
ground truth. Every tile has the same size and a title band with the task
name drawn by ``cv2.putText``:

====================  ==============  ==============  ===
``input``             ``semseg``      ``sal``         ...
``ground truth``      ``semseg GT``   ``sal GT``      ...
====================  ==============  ==============  ===

Images are RGB ``uint8`` ``(H, W, 3)`` arrays (:mod:`.task_maps` renders the
task maps); :func:`write_png` writes them atomically.
"""
from typing import Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..fileio import atomic_write_bytes

#: Colour of a tile with nothing to show (the GT row's first tile, a missing GT).
BLANK_COLOR = (40, 40, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def write_png(path: str, rgb: np.ndarray) -> str:
    """Write an RGB ``uint8`` image as PNG, atomically (:func:`ditask_mm.fileio.atomic_write_bytes`).

    Returns:
        ``path``.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}')
    ok, encoded = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise RuntimeError(f'could not encode {path} as PNG')
    atomic_write_bytes(encoded.tobytes(), path)
    return path


def fit_tile_size(height: int, width: int, max_side: int = 384) -> Tuple[int, int]:
    """``(height, width)`` scaled down (never up) so the longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_tile(image: np.ndarray, size: Tuple[int, int], smooth: bool = False) -> np.ndarray:
    """Resize to ``(height, width)``: nearest neighbour for maps (no blended label colours),
    area/linear interpolation for photos (``smooth``)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image.copy()
    if not smooth:
        interpolation = cv2.INTER_NEAREST
    elif height < image.shape[0]:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def draw_title(tile: np.ndarray, text: str) -> np.ndarray:
    """Draw ``text`` in white on a darkened band at the top of ``tile`` (in place)."""
    height, width = tile.shape[:2]
    scale = float(np.clip(min(height, width) / 320.0, 0.3, 1.0))
    thickness = 2 if scale >= 0.8 else 1
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    while text_w > width - 6 and scale > 0.2:  # shrink long titles to fit the tile
        scale *= 0.9
        (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    band = min(height, text_h + baseline + 6)
    tile[:band] = (tile[:band].astype(np.float32) * 0.4).astype(np.uint8)
    cv2.putText(tile, text, (3, 3 + text_h), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return tile


def _tile(image: Optional[np.ndarray], size: Tuple[int, int], title: str, smooth: bool = False) -> np.ndarray:
    if image is None:
        tile = np.empty((*size, 3), dtype=np.uint8)
        tile[:] = BLANK_COLOR
    else:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'tile {title!r}: expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}')
        tile = resize_tile(image, size, smooth)
    return draw_title(np.ascontiguousarray(tile), title)


def make_panel(image: np.ndarray,
               predictions: Mapping[str, np.ndarray],
               ground_truths: Optional[Mapping[str, np.ndarray]] = None,
               tile_size: Optional[Tuple[int, int]] = None,
               max_tile_side: int = 384,
               tasks: Optional[Sequence[str]] = None) -> np.ndarray:
    """Build the panel: ``input`` then one tile per task; a GT row if ``ground_truths``.

    Args:
        image: The input image, RGB ``uint8`` ``(H, W, 3)``.
        predictions: ``{task: RGB image}`` (see :func:`.render_task_map`).
        ground_truths: ``{task: RGB image}`` for the second row; tasks without
            one get a blank tile titled ``'<task> GT (none)'``.
        tile_size: ``(height, width)`` of every tile; default: the image size
            scaled down to at most ``max_tile_side``.
        max_tile_side: See ``tile_size``.
        tasks: Column order; default: the order of ``predictions``.

    Returns:
        ``(rows · tile_h, (1 + len(tasks)) · tile_w, 3)`` RGB ``uint8``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'the input image must be (H, W, 3), got {image.shape}')
    tasks = list(predictions) if tasks is None else list(tasks)
    missing = [t for t in tasks if t not in predictions]
    if missing:
        raise KeyError(f'no prediction for task(s) {missing}')
    size = tuple(tile_size) if tile_size is not None else fit_tile_size(*image.shape[:2], max_tile_side)
    rows = [[_tile(image, size, 'input', smooth=True)] + [_tile(predictions[t], size, t) for t in tasks]]
    if ground_truths is not None:
        rows.append([_tile(None, size, 'ground truth')] + [
            _tile(ground_truths[t], size, f'{t} GT') if t in ground_truths else _tile(None, size, f'{t} GT (none)')
            for t in tasks])
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


def save_panel(path: str, image: np.ndarray, predictions: Mapping[str, np.ndarray],
               ground_truths: Optional[Mapping[str, np.ndarray]] = None, **kwargs) -> np.ndarray:
    """:func:`make_panel` and write it to ``path`` as PNG; returns the panel."""
    panel = make_panel(image, predictions, ground_truths, **kwargs)
    write_png(path, panel)
    return panel
