"""Reading PASCAL_MT's ``.mat`` files: PASCAL-Part ``anno`` and the Context ``LabelMap``.

``human_parts/<id>.mat`` holds a 1×1 struct ``anno`` with fields
``(imname, objects)``; ``objects`` is a 1×N struct array with fields
``(class, class_ind, mask, parts)`` and ``parts`` a 1×P struct array with
fields ``(part_name, mask)`` or an empty array (``docs/datasets.md``, "What
each task reads"). Fields are found by name; files without names (as ``loadmat`` never
produces, but hand-built arrays may) are read by position, as the reference
loader always does.

The 7-class map follows the reference ``_load_human_parts``: every
object with ``class_ind == 15`` and a non-empty ``parts`` array paints its
parts in file order, later parts overwriting earlier ones; person pixels no
part covers stay 0. The ``has_human_parts`` flag is ``15`` in the
image's class list, where an object of zero mask area counts as ``-1``.
"""
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import scipy.io

from .constants import HUMAN_PART_GROUPS, PERSON_CLASS_IND


class MalformedFileError(ValueError):
    """A dataset file exists but does not hold what the layout expects."""


@dataclass
class PartObject:
    """One PASCAL-Part object: its VOC class, silhouette and named part masks."""

    class_ind: int
    mask: np.ndarray
    parts: List[Tuple[str, np.ndarray]] = field(default_factory=list)
    has_parts_array: bool = False


def load_mat(path: str) -> dict:
    """``scipy.io.loadmat(path)`` with a :class:`MalformedFileError` naming the file."""
    try:
        return scipy.io.loadmat(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # scipy raises ValueError/TypeError/NotImplementedError (v7.3)...
        raise MalformedFileError(
            f'{path}: cannot be read as a MATLAB v5 .mat file ({type(exc).__name__}: {exc})') from exc


def read_label_map(path: str) -> np.ndarray:
    """The H×W ``LabelMap`` (459-class PASCAL-Context ids) of a ``.mat`` file, dtype kept."""
    mat = load_mat(path)
    if 'LabelMap' not in mat:
        keys = sorted(k for k in mat if not k.startswith('__'))
        raise MalformedFileError(f'{path}: no variable "LabelMap" (found {keys}); expected the '
                                 'PASCAL-Context trainval .mat with an HxW uint16 LabelMap')
    label_map = np.asarray(mat['LabelMap'])
    if label_map.ndim != 2 or label_map.dtype.kind not in 'uifb' or label_map.size == 0:
        raise MalformedFileError(f'{path}: LabelMap has shape {label_map.shape} and dtype '
                                 f'{label_map.dtype}; expected a non-empty HxW integer array')
    return label_map


def _field(record: Any, name: str, position: int, path: str) -> Any:
    names = getattr(getattr(record, 'dtype', None), 'names', None)
    try:
        if names and name in names:
            return record[name]
        return record[position]
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise MalformedFileError(f'{path}: struct has no field {name!r} (position {position}); '
                                 'expected the PASCAL-Part anno layout') from exc


def _scalar(value: Any, what: str, path: str) -> float:
    array = np.asarray(value)
    if array.size != 1:
        raise MalformedFileError(f'{path}: {what} has shape {array.shape}; expected a 1x1 number')
    try:
        return float(array.reshape(-1)[0].item())
    except (TypeError, ValueError) as exc:
        raise MalformedFileError(f'{path}: {what} is not a number ({array!r})') from exc


def _text(value: Any, what: str, path: str) -> str:
    array = np.asarray(value)
    if array.dtype.kind == 'U' and array.size == 1:
        return str(array.reshape(-1)[0])
    if array.dtype.kind == 'U' and array.size == 0:
        return ''
    raise MalformedFileError(f'{path}: {what} is {array!r}; expected a char array')


def _mask(value: Any, what: str, path: str) -> np.ndarray:
    mask = np.asarray(value)
    if mask.ndim != 2 or mask.dtype.kind not in 'uifb':
        raise MalformedFileError(f'{path}: {what} has shape {mask.shape} and dtype {mask.dtype}; '
                                 'expected an HxW uint8/logical mask')
    return mask


def read_parts_annotation(path: str) -> List[PartObject]:
    """The objects of a PASCAL-Part ``human_parts/<id>.mat``, in file order."""
    mat = load_mat(path)
    if 'anno' not in mat:
        keys = sorted(k for k in mat if not k.startswith('__'))
        raise MalformedFileError(f'{path}: no variable "anno" (found {keys}); expected a '
                                 'PASCAL-Part struct anno with fields (imname, objects)')
    anno = np.asarray(mat['anno'])
    if anno.size != 1:
        raise MalformedFileError(f'{path}: anno has shape {anno.shape}; expected a 1x1 struct')
    objects = np.asarray(_field(anno.reshape(-1)[0], 'objects', 1, path))
    if objects.size == 0:
        return []
    if objects.dtype.names is None and objects.dtype != object:
        raise MalformedFileError(f'{path}: anno.objects has dtype {objects.dtype}; expected a '
                                 '1xN struct array (class, class_ind, mask, parts)')
    result = []
    for j, record in enumerate(objects.reshape(-1)):
        where = f'object {j}'
        class_ind = int(round(_scalar(_field(record, 'class_ind', 1, path), f'{where} class_ind', path)))
        mask = _mask(_field(record, 'mask', 2, path), f'{where} mask', path)
        parts_array = np.asarray(_field(record, 'parts', 3, path))
        parts = []
        # The reference tests ``len(parts) != 0``: a 0x0 array means "no parts".
        has_parts_array = len(parts_array) != 0
        if has_parts_array and parts_array.size:
            for k, part in enumerate(parts_array.reshape(-1)):
                name = _text(_field(part, 'part_name', 0, path), f'{where} part {k} name', path)
                part_mask = _mask(_field(part, 'mask', 1, path), f'{where} part {name!r} mask', path)
                parts.append((name, part_mask))
        result.append(PartObject(class_ind, mask, parts, has_parts_array))
    return result


def object_classes(objects: Sequence[PartObject]) -> List[int]:
    """The Parts-cache entry of an image: ``class_ind`` if the mask has pixels, else -1."""
    return [obj.class_ind if float(np.sum(obj.mask)) > 0 else -1 for obj in objects]


def has_human_parts(classes: Sequence[int]) -> bool:
    """The reference flag: a person object of positive area is in the image."""
    return PERSON_CLASS_IND in classes


def build_parts_map(objects: Sequence[PartObject], path: str = '<parts>',
                    shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """The 7-class human-parts map (uint8, 0..6) of a *flagged* image.

    Args:
        objects: The objects of the ``.mat`` file, in file order.
        path: The file, for error messages.
        shape: Shape of the all-zero map returned when no person object has
            parts; the first object's mask shape if None.

    Raises:
        KeyError: A person part name outside the 24 PASCAL-Part person names.
        MalformedFileError: Part masks of different shapes.
    """
    target = None
    for obj in objects:
        if obj.class_ind != PERSON_CLASS_IND or not obj.has_parts_array:
            continue
        if target is None:
            target = np.zeros(obj.mask.shape, dtype=np.uint8)
        for name, mask in obj.parts:
            if name not in HUMAN_PART_GROUPS:
                raise KeyError(f'{path}: unknown person part name {name!r}; expected one of '
                               f'{sorted(HUMAN_PART_GROUPS)}')
            if mask.shape != target.shape:
                raise MalformedFileError(f'{path}: part {name!r} mask has shape {mask.shape}, '
                                         f'the person masks {target.shape}')
            target[mask.astype(bool)] = HUMAN_PART_GROUPS[name]
    if target is None:
        if shape is None:
            shape = objects[0].mask.shape if objects else None
        if shape is None:
            raise MalformedFileError(f'{path}: no objects, so the map size is unknown; '
                                     'load the image first (LoadImageFromFile)')
        target = np.zeros(shape, dtype=np.uint8)
    return target
