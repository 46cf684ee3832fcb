"""Load every task's target of a PASCAL_MT / NYUD_MT sample.

:class:`LoadMultiTaskAnnotations` reads the per-task source paths that the
datasets put in each data-list entry and decodes them as the reference
loaders do (``docs/datasets.md``); each result key is
appended to ``seg_fields``:

* semseg, ``sem_seg_path`` → ``gt_sem_seg`` (H,W) uint8, values kept; with
  ``sem_seg_reduce_zero`` (NYUD) 0 → 255 and k → k−1;
* human_parts, ``human_parts_path`` (+ ``has_human_parts``) →
  ``gt_human_parts`` (H,W) uint8 0..6, all 0 for an image not flagged;
* sal, ``saliency_path`` → ``gt_saliency`` (H,W) float32, ``v/255 > 0.5``;
* normals, ``normals_path`` → ``gt_normals`` (H,W,3) float32: a PNG decodes
  as ``2v/255 − 1`` with pixels of non-valid LabelMap classes
  (``normals_label_map_path``) set to (0,0,0); an ``.npy`` is taken as stored;
* depth, ``depth_path`` → ``gt_depth`` (H,W) float32 metres, 0 = invalid;
* edge, ``edge_label_map_path`` → ``gt_edge`` (H,W) float32 {0,1}, the
  thinned ``|Laplacian(LabelMap)| > 0``; or ``edge_path``, an ``.npy`` map.

The image itself is loaded by mmcv's ``LoadImageFromFile``, placed before this
transform. A target whose size differs from the image's is resized to it
(nearest; cubic for normals) with a logged warning naming the file.
"""
import logging
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from PIL import Image

from ...registry import TRANSFORMS
from ...tasks import TASKS, check_tasks
from ..constants import NORMALS_VALID_CONTEXT_IDS
from ..pascal_parts import (MalformedFileError, build_parts_map, has_human_parts, object_classes,
                            read_label_map, read_parts_annotation)

#: Result keys that hold each task's source file, in the order they are tried.
TASK_SOURCES: Dict[str, Tuple[str, ...]] = {
    'semseg': ('sem_seg_path',),
    'human_parts': ('human_parts_path',),
    'sal': ('saliency_path',),
    'normals': ('normals_path',),
    'depth': ('depth_path',),
    'edge': ('edge_label_map_path', 'edge_path'),
}

_LAPLACIAN_DTYPES = (np.uint8, np.uint16, np.int16, np.float64)


# --------------------------------------------------------------------------- readers
def read_png(path: str, modes: Sequence[str], expected: str) -> np.ndarray:
    """A PNG as an array (palette images give their indices), checking its PIL mode."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in modes:
                raise MalformedFileError(f'{path}: PNG mode {mode!r}; expected {expected}')
            return np.array(image)
    except (FileNotFoundError, MalformedFileError):
        raise
    except Exception as exc:
        raise MalformedFileError(f'{path}: cannot be decoded as an image '
                                 f'({type(exc).__name__}: {exc}); expected {expected}') from exc


def read_npy(path: str, channels: Optional[int], expected: str) -> np.ndarray:
    """A numeric ``.npy`` as float32: (H,W) when ``channels`` is None (a trailing 1 is squeezed)."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise MalformedFileError(f'{path}: cannot be read as a .npy array ({type(exc).__name__}: '
                                 f'{exc}); expected {expected}') from exc
    if channels is None and array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    ok_shape = array.ndim == 2 if channels is None else (array.ndim == 3 and array.shape[2] == channels)
    if not ok_shape or array.dtype.kind not in 'uifb' or array.size == 0:
        raise MalformedFileError(f'{path}: array of shape {array.shape} and dtype {array.dtype}; '
                                 f'expected {expected}')
    return array.astype(np.float32)


def decode_sem_seg(path: str, reduce_zero: bool = False) -> np.ndarray:
    """Semseg PNG (mode L or P) → uint8; NYUD (``reduce_zero``): 0 → 255, k → k−1."""
    labels = read_png(path, ('L', 'P'), 'an 8-bit single-channel (L or P) label PNG')
    if not reduce_zero:
        return labels.astype(np.uint8)
    if np.any(labels == 255):
        raise MalformedFileError(f'{path}: contains 255; expected NYUD labels 0 (unlabeled) '
                                 'and 1..40')
    out = labels.astype(np.int16) - 1
    out[labels == 0] = 255
    return out.astype(np.uint8)


def decode_saliency(path: str) -> np.ndarray:
    """Saliency PNG (single-channel intensities) → float32 {0,1}: ``v/255 > 0.5``."""
    values = read_png(path, ('L',), 'an 8-bit single-channel (mode L) intensity PNG')
    return (values.astype(np.float64) / 255.0 > 0.5).astype(np.float32)


def decode_normals_png(path: str) -> np.ndarray:
    """Distilled normals PNG (RGB) → float32 ``2v/255 − 1``, channels (n_x, n_y, n_z)."""
    values = read_png(path, ('RGB',), 'an 8-bit RGB PNG encoding (n+1)*255/2')
    return (2.0 * values.astype(np.float64) / 255.0 - 1.0).astype(np.float32)


# --------------------------------------------------------------------------- edges
def _neighbour_luts() -> Tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two Guo–Hall sub-iterations, indexed by the 8-neighbour code.

    Bit ``i−1`` of a code is neighbour ``x_i``: x1 east, then counter-clockwise
    (x2 north-east, x3 north, …, x8 south-east). A foreground pixel is deleted
    when (G1) it has exactly one 4-connected run crossing, (G2) the smaller of
    the two pair counts N1/N2 is 2 or 3, and (G3/G3') it is not a protected
    north-east / south-west border point of the sub-iteration (Guo & Hall,
    CACM 32(3), 1989, algorithm A1).
    """
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    for code in range(256):
        bit = [(code >> k) & 1 for k in range(8)]

        def x(i: int) -> int:  # 1-based, cyclic (x9 = x1)
            return bit[(i - 1) % 8]

        crossings = sum(1 for i in (1, 3, 5, 7) if not x(i) and (x(i + 1) or x(i + 2)))
        n1 = sum(1 for k in (1, 3, 5, 7) if x(k) or x(k + 1))
        n2 = sum(1 for k in (2, 4, 6, 8) if x(k) or x(k + 1))
        deletable = crossings == 1 and min(n1, n2) in (2, 3)
        first[code] = deletable and not ((x(2) or x(3) or not x(8)) and x(1))
        second[code] = deletable and not ((x(6) or x(7) or not x(4)) and x(5))
    return first, second


_THIN_LUTS = _neighbour_luts()


def _neighbour_codes(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, 1)  # pixels outside the image are background
    return (padded[1:-1, 2:]            # x1 east
            | padded[:-2, 2:] << 1      # x2 north-east
            | padded[:-2, 1:-1] << 2    # x3 north
            | padded[:-2, :-2] << 3     # x4 north-west
            | padded[1:-1, :-2] << 4    # x5 west
            | padded[2:, :-2] << 5      # x6 south-west
            | padded[2:, 1:-1] << 6     # x7 south
            | padded[2:, 2:] << 7)      # x8 south-east


def thin(mask: np.ndarray) -> np.ndarray:
    """Morphological thinning to 1-pixel-wide 8-connected lines (bool in, bool out).

    Two parallel sub-iterations per pass, repeated until a pass deletes
    nothing: the algorithm of ``skimage.morphology.thin`` (Guo–Hall A1, zero
    border), reimplemented so that scikit-image is not a dependency.
    """
    skel = (np.asarray(mask) != 0).astype(np.uint8)
    if skel.ndim != 2:
        raise ValueError(f'thin expects a 2-D mask, got shape {skel.shape}')
    count = int(skel.sum())
    while count:
        for lut in _THIN_LUTS:
            skel[lut[_neighbour_codes(skel)]] = 0
        new_count = int(skel.sum())
        if new_count == count:
            break
        count = new_count
    return skel.astype(bool)


def label_map_edges(label_map: np.ndarray) -> np.ndarray:
    """Reference PASCAL edges: ``thin(|cv2.Laplacian(LabelMap, CV_64F)| > 0)`` as float32.

    The 4-neighbour Laplacian (ksize 1) with reflect-101 borders; label maps
    of a dtype ``cv2.Laplacian`` rejects (int32, float32, ...) are converted to
    float64 first, which is exact for label ids and gives the same response.
    """
    label_map = np.asarray(label_map)
    if label_map.dtype not in _LAPLACIAN_DTYPES:
        label_map = label_map.astype(np.float64)
    response = cv2.Laplacian(label_map, cv2.CV_64F)
    return thin(np.abs(response) > 0).astype(np.float32)


def normals_valid_mask(label_map: np.ndarray) -> np.ndarray:
    """True where the PASCAL-Context class keeps its normal (Appendix B, 170 ids)."""
    return np.isin(label_map, np.fromiter(NORMALS_VALID_CONTEXT_IDS, dtype=np.int64))


# --------------------------------------------------------------------------- transform
def _image_shape(results: dict) -> Optional[Tuple[int, int]]:
    if results.get('img') is not None:
        return tuple(results['img'].shape[:2])
    if results.get('img_shape') is not None:
        return tuple(results['img_shape'][:2])
    return None


def _fit(array: np.ndarray, shape: Optional[Tuple[int, int]], path: str, what: str,
         interpolation: int) -> np.ndarray:
    """Resize ``array`` to ``shape`` (H, W) when they differ, logging a warning."""
    if shape is None or array.shape[:2] == shape:
        return array
    name = 'cubic' if interpolation == cv2.INTER_CUBIC else 'nearest'
    print_log(f'{path}: {what} is {array.shape[0]}x{array.shape[1]}, the image {shape[0]}x{shape[1]}; '
              f'resized to the image size ({name})', logger='current', level=logging.WARNING)
    return cv2.resize(array, (shape[1], shape[0]), interpolation=interpolation)


@TRANSFORMS.register_module()
class LoadMultiTaskAnnotations(BaseTransform):
    """Load the targets of the tasks whose source paths the sample carries.

    Required keys: the source paths of the tasks to load (see the module
    docstring), ``img`` or ``img_shape`` to resize mismatched targets.
    Added keys: ``gt_sem_seg``, ``gt_human_parts``, ``gt_saliency``,
    ``gt_normals``, ``gt_depth``, ``gt_edge`` (those loaded), each appended to
    ``seg_fields``.

    Args:
        tasks: Tasks to load. None loads every task the sample has a source
            for; a named task without a source raises ``KeyError``.
    """

    def __init__(self, tasks: Optional[Sequence[str]] = None) -> None:
        self.tasks = None if tasks is None else check_tasks(tasks, 'LoadMultiTaskAnnotations')

    def _source(self, results: dict, task: str) -> Optional[str]:
        for key in TASK_SOURCES[task]:
            if results.get(key):
                return key
        return None

    def transform(self, results: dict) -> dict:
        tasks = self.tasks or tuple(t for t in TASKS if self._source(results, t))
        shape = _image_shape(results)
        seg_fields = results.setdefault('seg_fields', [])
        for task in tasks:
            key = self._source(results, task)
            if key is None:
                raise KeyError(f'no source for task {task!r} in sample {results.get("img_path")!r}: '
                               f'expected one of {list(TASK_SOURCES[task])} (the dataset was built '
                               'without this task?)')
            target = getattr(self, f'_load_{task}')(results, results[key], key, shape)
            gt_key = TASKS[task].gt_key
            results[gt_key] = target
            if gt_key not in seg_fields:
                seg_fields.append(gt_key)
        return results

    # One loader per task: (results, path, source key, image shape) -> array.
    def _load_semseg(self, results, path, key, shape):
        labels = decode_sem_seg(path, bool(results.get('sem_seg_reduce_zero', False)))
        return _fit(labels, shape, path, 'semseg', cv2.INTER_NEAREST)

    def _load_human_parts(self, results, path, key, shape):
        flag = results.get('has_human_parts')
        objects = None
        if flag is None:
            objects = read_parts_annotation(path)
            flag = has_human_parts(object_classes(objects))
        if flag:
            objects = read_parts_annotation(path) if objects is None else objects
            parts = build_parts_map(objects, path, shape)
        else:
            if shape is None:
                objects = read_parts_annotation(path) if objects is None else objects
                parts = build_parts_map([], path, objects[0].mask.shape if objects else None)
            else:
                parts = np.zeros(shape, dtype=np.uint8)
        return _fit(parts, shape, path, 'human parts', cv2.INTER_NEAREST)

    def _load_sal(self, results, path, key, shape):
        return _fit(decode_saliency(path), shape, path, 'saliency', cv2.INTER_NEAREST)

    def _load_normals(self, results, path, key, shape):
        if path.endswith('.npy'):
            normals = read_npy(path, 3, 'HxWx3 float unit normals (zero vector = invalid)')
        else:
            normals = decode_normals_png(path)
            label_path = results.get('normals_label_map_path')
            if label_path:
                label_map = read_label_map(label_path)
                label_map = _fit(label_map.astype(np.float64), normals.shape[:2], label_path,
                                 'LabelMap (normals validity)', cv2.INTER_NEAREST)
                normals[~normals_valid_mask(label_map)] = 0
        return _fit(normals, shape, path, 'normals', cv2.INTER_CUBIC)

    def _load_depth(self, results, path, key, shape):
        depth = read_npy(path, None, 'an HxW float depth map in metres (0 = invalid)')
        return _fit(depth, shape, path, 'depth', cv2.INTER_NEAREST)

    def _load_edge(self, results, path, key, shape):
        if key == 'edge_label_map_path':
            edge = label_map_edges(read_label_map(path))
        else:
            edge = read_npy(path, None, 'an HxW {0,1} edge map')
            if np.any((edge != 0) & (edge != 1)):
                raise MalformedFileError(f'{path}: edge values {np.unique(edge)[:8]}...; '
                                         'expected {0, 1}')
        return _fit(edge, shape, path, 'edge', cv2.INTER_NEAREST)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(tasks={self.tasks})'
