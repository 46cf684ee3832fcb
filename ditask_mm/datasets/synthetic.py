"""Small synthetic PASCAL_MT / NYUD_MT trees in the exact on-disk layout.

Each image is a simple scene: a back wall and a floor (PASCAL also sky or a
ceiling, NYUD a ceiling, a wall-mounted rectangle and an unlabeled patch),
then spheres, boxes and people standing on the floor, painted far to near.
Normals and depth follow from that geometry; an object's colour *and*
texture (stripes, checker or dots, with a class-specific period and
orientation) are functions of its class, so semseg is learnable from the
image. Every task's labels come from the same painted layers, so they agree.

The hard cases of shared/docs/data-and-metrics.md §7(b) are placed by a fixed
schedule (see :data:`PASCAL_SCENARIOS`): a person with parts, a person
without parts, no person (and no salient pixel), a person whose mask is
empty, two overlapping people, and an unlabeled LabelMap strip; VOC12
precedence PNGs for every fourth id, portrait sizes for every third,
saliency values of exactly 127 and 128 at object borders, NYUD depth zeros,
zero normal vectors and segmentation values 0 and 40.

:func:`generate` returns, for every image, the arrays a correct loader must
produce (:attr:`SyntheticTree.targets`); nothing but the real layout is
written under the output directory.
"""
import colorsys
import io
import json
import os
import os.path as osp
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.io
from PIL import Image

from .constants import (CONTEXT_CATEGORY_LABELS, CONTEXT_IDS, HUMAN_PART_GROUPS, NORMALS_VALID_CONTEXT_IDS,
                        PASCAL_CLASSES, PERSON_CLASS_IND, voc_palette)

PASCAL_SCENARIOS = ('person_parts', 'person_no_parts', 'no_person', 'zero_area_person', 'two_persons',
                    'unlabeled_strip')
NYUD_PERSON = 31
_NYUD_OBJECTS = (4, 5, 6, 7, 29, 35, 40)
_PASCAL_OBJECTS = (2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 16, 18, 20)  # valid and invalid normals
_ANIMAL_PARTS = {8: ('head', 'torso', 'tail'), 10: ('head', 'torso', 'muzzle'),
                 12: ('head', 'torso', 'muzzle'), 13: ('head', 'torso', 'tail')}
_LIGHT = np.array([0.3, 0.5, 0.81]) / np.linalg.norm([0.3, 0.5, 0.81])
_MAT_HEADER = b'MATLAB 5.0 MAT-file, written by ditask_mm.datasets.synthetic'.ljust(116, b' ')

ProgressFn = Callable[[int, int], None]


@dataclass
class SyntheticTree:
    """What :func:`generate` wrote.

    Attributes:
        root: The dataset directory.
        dataset: ``'pascal'`` or ``'nyud'``.
        splits: Split name → ids, in file order.
        targets: Id → task → the array the loader must return (``gt_*``
            semantics: PASCAL semseg/human_parts/sal/normals and the LabelMap
            under ``'label_map'``; NYUD semseg/depth/normals/edge).
        info: Id → facts about the image (size, scenario, flags).
    """

    root: str
    dataset: str
    splits: Dict[str, List[str]]
    targets: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)
    info: Dict[str, dict] = field(default_factory=dict)


# --------------------------------------------------------------------------- drawing
class _Canvas:
    """Layers painted far to near: appearance key, label, instance, normals, depth."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
        self.key = np.zeros((h, w), np.int32)
        self.label = np.zeros((h, w), np.int32)
        self.inst = np.full((h, w), -1, np.int32)
        self.normals = np.zeros((h, w, 3))
        self.normals[..., 2] = 1.0
        self.depth = np.zeros((h, w))

    def paint(self, mask, key, label, normals=None, depth=None, inst=-1) -> None:
        self.key[mask], self.label[mask], self.inst[mask] = key, label, inst
        if normals is not None:
            self.normals[mask] = normals[mask] if np.ndim(normals) == 3 else normals
        if depth is not None:
            self.depth[mask] = depth[mask] if np.ndim(depth) == 2 else depth

    def rect(self, y0, y1, x0, x1) -> np.ndarray:
        return (self.yy >= y0) & (self.yy < y1) & (self.xx >= x0) & (self.xx < x1)

    def disc(self, cy, cx, r) -> np.ndarray:
        return (self.yy - cy) ** 2 + (self.xx - cx) ** 2 <= r * r


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _sphere_normals(c: _Canvas, cy, cx, r) -> np.ndarray:
    nx = np.clip((c.xx - cx) / r, -1, 1)
    ny = np.clip(-(c.yy - cy) / r, -1, 1)  # camera frame: x right, y up, z towards the viewer
    nz = np.sqrt(np.clip(1 - nx ** 2 - ny ** 2, 0.02, 1))
    return _unit(np.stack([nx, ny, nz], -1))


def _cylinder_normals(c: _Canvas, cx, half_width) -> np.ndarray:
    nx = np.clip((c.xx - cx) / max(half_width, 1e-6), -0.95, 0.95)
    return _unit(np.stack([nx, np.zeros_like(nx), np.sqrt(1 - nx ** 2)], -1))


def _appearance(c: _Canvas, key: int) -> np.ndarray:
    """Colour and texture of a class (``key``), shaded by the normals."""
    hue = (key * 0.618034) % 1.0
    base = np.array(colorsys.hsv_to_rgb(hue, 0.45 + 0.15 * (key % 3), 0.85)) * 255
    period = 4.0 + (key * 3) % 7
    theta = np.deg2rad((key * 47) % 180)
    phase = 2 * np.pi / period
    kind = key % 3
    if kind == 0:
        pattern = np.sign(np.sin(phase * (c.xx * np.cos(theta) + c.yy * np.sin(theta))))
    elif kind == 1:
        pattern = np.sign(np.sin(phase * c.xx) * np.sin(phase * c.yy))
    else:
        pattern = np.where(np.cos(phase * c.xx) * np.cos(phase * c.yy) > 0.3, 1.0, -1.0)
    shade = np.clip(c.normals @ _LIGHT, 0, 1)
    return base * (0.55 + 0.45 * shade)[..., None] + 28 * pattern[..., None]


def _render(c: _Canvas, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((c.h, c.w, 3))
    for key in np.unique(c.key):
        sel = c.key == key
        img[sel] = _appearance(c, int(key))[sel]
    img += rng.normal(0, 4, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _neighbour_differs(a: np.ndarray) -> np.ndarray:
    """True where a 4-neighbour holds a different value."""
    out = np.zeros(a.shape, bool)
    out[:, :-1] |= a[:, :-1] != a[:, 1:]
    out[:, 1:] |= a[:, 1:] != a[:, :-1]
    out[:-1] |= a[:-1] != a[1:]
    out[1:] |= a[1:] != a[:-1]
    return out


# --------------------------------------------------------------------------- scene parts
def _person(c: _Canvas, cx: float, base: float, height: float) -> List[Tuple[str, np.ndarray]]:
    """Named part masks of a standing person (painting order) and the silhouette's extra belt."""
    top = base - height
    u = height

    def r(y0, y1, dx0, dx1):
        return c.rect(top + y0 * u, top + y1 * u, cx + dx0 * u, cx + dx1 * u)

    parts = [
        ('head', c.disc(top + 0.09 * u, cx, 0.085 * u)),
        ('hair', c.disc(top + 0.05 * u, cx, 0.06 * u) & (c.yy < top + 0.06 * u)),
        ('neck', r(0.15, 0.21, -0.035, 0.035)),    # overlaps the head: torso group wins there
        ('torso', r(0.20, 0.52, -0.12, 0.12)),
        ('luarm', r(0.21, 0.38, 0.10, 0.18)),       # overlaps the torso: the arm wins there
        ('ruarm', r(0.21, 0.38, -0.18, -0.10)),
        ('llarm', r(0.38, 0.53, 0.11, 0.18)),
        ('rlarm', r(0.38, 0.53, -0.18, -0.11)),
        ('lhand', r(0.53, 0.58, 0.11, 0.18)),
        ('rhand', r(0.53, 0.58, -0.18, -0.11)),
        ('luleg', r(0.56, 0.77, 0.0, 0.11)),
        ('ruleg', r(0.56, 0.77, -0.11, 0.0)),
        ('llleg', r(0.77, 0.95, 0.01, 0.10)),
        ('rlleg', r(0.77, 0.95, -0.10, -0.01)),
        ('lfoot', r(0.95, 1.0, 0.01, 0.14)),
        ('rfoot', r(0.95, 1.0, -0.14, -0.01)),
    ]
    belt = r(0.52, 0.56, -0.12, 0.12)  # person pixels no part covers
    return parts + [('', belt)]


@dataclass
class _Object:
    cls: int                       # VOC index (PASCAL) or NYUD label
    key: int                       # appearance key / LabelMap id
    mask: np.ndarray
    normals: np.ndarray
    depth: np.ndarray
    base: float
    parts: Optional[List[Tuple[str, np.ndarray]]] = None   # None: no parts array
    zero_area: bool = False


def _floor_depth(c: _Canvas, horizon: float, wall_depth: float) -> np.ndarray:
    t = np.clip((c.yy - horizon) / max(c.h - horizon, 1), 0, 1)
    return wall_depth / (1 + 3 * t)


def _make_object(c: _Canvas, rng, cls: int, key: int, horizon: float, wall_depth: float,
                 kind: str, cx: Optional[float] = None) -> _Object:
    size = min(c.h, c.w)
    base = rng.uniform(horizon + 0.25 * (c.h - horizon), c.h + 0.02 * c.h)
    cx = rng.uniform(0.15 * c.w, 0.85 * c.w) if cx is None else cx
    ground = wall_depth / (1 + 3 * np.clip((base - horizon) / max(c.h - horizon, 1), 0, 1))
    if kind == 'sphere':
        rad = rng.uniform(0.1, 0.2) * size + 1.5
        cy = base - rad
        mask = c.disc(cy, cx, rad)
        normals = _sphere_normals(c, cy, cx, rad)
        depth = ground - 0.4 * normals[..., 2]
    else:
        half_w, height = rng.uniform(0.08, 0.2) * size + 1.5, rng.uniform(0.15, 0.35) * size + 2
        mask = c.rect(base - height, base, cx - half_w, cx + half_w)
        angle = rng.uniform(-0.5, 0.5)
        normals = np.broadcast_to(_unit([np.sin(angle), 0.05, np.cos(angle)]), (c.h, c.w, 3)).copy()
        depth = ground - 0.3 + 0.01 * np.tan(angle) * (c.xx - cx)
    return _Object(cls, key, mask, normals, depth, base)


def _make_person(c: _Canvas, rng, cls: int, key: int, horizon: float, wall_depth: float,
                 with_parts: bool, cx: Optional[float] = None, base: Optional[float] = None) -> _Object:
    base = rng.uniform(0.9 * c.h, c.h) if base is None else base
    height = rng.uniform(0.6, 0.8) * c.h
    cx = rng.uniform(0.3 * c.w, 0.7 * c.w) if cx is None else cx
    named = _person(c, cx, base, height)
    silhouette = np.logical_or.reduce([m for _, m in named])
    normals = _cylinder_normals(c, cx, 0.18 * height)
    head = named[0][1]
    normals[head] = _sphere_normals(c, base - height + 0.09 * height, cx, 0.085 * height)[head]
    ground = wall_depth / (1 + 3 * np.clip((base - horizon) / max(c.h - horizon, 1), 0, 1))
    depth = ground - 0.25 * normals[..., 2]
    parts = [(n, m) for n, m in named if n] if with_parts else None
    return _Object(cls, key, silhouette, normals, depth, base, parts)


def _animal_parts(c: _Canvas, visible: np.ndarray, names: Sequence[str]) -> List[Tuple[str, np.ndarray]]:
    """Non-person parts (names outside the 24 person names): top third, the rest, a corner."""
    rows = np.flatnonzero(visible.any(1))
    split = rows[0] + (rows[-1] - rows[0]) // 3 + 1 if rows.size else 0
    upper = visible & (c.yy < split)
    corner = upper & (c.xx < c.xx[upper].mean()) if upper.any() else upper
    return [(names[0], upper), (names[1], visible & ~upper), (names[2], corner)]


def _paint_objects(c: _Canvas, objects: List[_Object]) -> None:
    for index, obj in sorted(enumerate(objects), key=lambda item: item[1].base):
        if not obj.zero_area:
            c.paint(obj.mask, obj.key, obj.cls, obj.normals, obj.depth, inst=index)


# --------------------------------------------------------------------------- files
def _save_png(path: str, array: np.ndarray, palette: Optional[Sequence[int]] = None) -> None:
    """uint8 (H,W) → mode L, (H,W,3) → RGB; with ``palette``, mode P keeping the values as indices."""
    image = Image.fromarray(np.ascontiguousarray(array))
    if palette is not None:
        image.putpalette(list(palette))
    image.save(path, format='PNG')


def _save_jpg(path: str, rgb: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, format='JPEG', quality=95)


def _save_mat(path: str, variables: dict) -> None:
    """``scipy.io.savemat`` with a fixed header text, so files are byte-identical per seed."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, do_compression=True)
    data = bytearray(buffer.getvalue())
    data[:116] = _MAT_HEADER
    with open(path, 'wb') as f:
        f.write(bytes(data))


def _struct_array(fields: Sequence[str], rows: Sequence[tuple]) -> np.ndarray:
    array = np.empty((1, len(rows)), dtype=[(name, 'O') for name in fields])
    for j, row in enumerate(rows):
        array[0, j] = row
    return array


def _anno(img_id: str, objects: List[Tuple[int, np.ndarray, Optional[list]]]) -> np.ndarray:
    rows = []
    for class_ind, mask, parts in objects:
        if parts is None:
            parts_array = np.zeros((0, 0))
        else:
            parts_array = _struct_array(('part_name', 'mask'),
                                        [(name, m.astype(np.uint8)) for name, m in parts])
        rows.append((PASCAL_CLASSES[class_ind], np.array([[float(class_ind)]]), mask.astype(np.uint8),
                     parts_array))
    return _struct_array(('imname', 'objects'),
                         [(img_id, _struct_array(('class', 'class_ind', 'mask', 'parts'), rows))])


def _encode_normals(normals: np.ndarray) -> np.ndarray:
    return np.clip(np.round((normals + 1) * 127.5), 0, 255).astype(np.uint8)


def _saliency_png(salient: np.ndarray, near_salient: np.ndarray, rng) -> np.ndarray:
    """Soft saliency intensities: ≥128 exactly on ``salient`` (128 on its inner border), else ≤127."""
    h, w = salient.shape
    low = np.clip(np.round(rng.uniform(0, 90) * (1 - np.linspace(0, 1, h))[:, None] + rng.integers(0, 20, (h, w))),
                  0, 120)
    high = np.clip(np.round(rng.uniform(180, 255) - rng.integers(0, 40, (h, w))), 129, 255)
    values = np.where(salient, high, low)
    values[salient & _neighbour_differs(salient)] = 128
    values[~salient & _neighbour_differs(salient)] = 127
    values[~salient & near_salient] = 127
    return values.astype(np.uint8)


# --------------------------------------------------------------------------- PASCAL
def _pascal_image(img_id: str, index: int, size: Tuple[int, int], rng, root: str) -> Tuple[dict, dict]:
    scenario = PASCAL_SCENARIOS[index % len(PASCAL_SCENARIOS)]
    h, w = size
    c = _Canvas(h, w)
    horizon = rng.uniform(0.45, 0.6) * h
    wall_depth = rng.uniform(3, 6)
    c.paint(c.yy < horizon, CONTEXT_IDS['wall'], 0, _unit([0, 0, 1]))
    c.paint(c.yy >= horizon, CONTEXT_IDS['floor'], 0, _unit([0, 0.82, 0.57]))
    top = CONTEXT_IDS['ceiling'] if index % 5 == 4 else CONTEXT_IDS['sky']
    top_normal = _unit([0, -0.8, 0.6] if top == CONTEXT_IDS['ceiling'] else [0, 0, 1])
    c.paint(c.yy < rng.uniform(0.12, 0.25) * h, top, 0, top_normal)

    classes = list(rng.choice(_PASCAL_OBJECTS, size=2, replace=False))
    objects = [_make_object(c, rng, int(k), CONTEXT_CATEGORY_LABELS[k], horizon, wall_depth,
                            'sphere' if j % 2 else 'box', cx=(0.2 + 0.6 * j) * w) for j, k in enumerate(classes)]
    person_key = CONTEXT_CATEGORY_LABELS[PERSON_CLASS_IND]
    if scenario in ('person_parts', 'unlabeled_strip', 'two_persons'):
        objects.append(_make_person(c, rng, PERSON_CLASS_IND, person_key, horizon, wall_depth, True))
    if scenario == 'two_persons':
        first = objects[-1]
        objects.append(_make_person(c, rng, PERSON_CLASS_IND, person_key, horizon, wall_depth, True,
                                    cx=0.5 * w + 0.12 * h, base=min(first.base + 0.05 * h, 1.05 * h)))
    if scenario == 'person_no_parts':
        objects.append(_make_person(c, rng, PERSON_CLASS_IND, person_key, horizon, wall_depth, False))
    if scenario == 'zero_area_person':
        ghost = _make_person(c, rng, PERSON_CLASS_IND, person_key, horizon, wall_depth, True)
        ghost.zero_area = True
        objects.append(ghost)
    _paint_objects(c, objects)
    if scenario == 'unlabeled_strip':
        c.paint(c.xx < 2, 0, 0, inst=-1)
    image = _render(c, rng)

    label_map = c.key.astype(np.uint16)
    semseg = c.label.astype(np.uint8)
    objects_px = semseg > 0
    assert np.array_equal(label_map[objects_px], np.array(CONTEXT_CATEGORY_LABELS)[semseg[objects_px]])
    # .mat objects in painting-list order; a person's parts are cut to its visible pixels.
    mat_objects, parts_map, flagged, salient = [], np.zeros((h, w), np.uint8), False, np.zeros((h, w), bool)
    for j, obj in enumerate(objects):
        visible = c.inst == j  # a zero-area object was never painted
        parts = obj.parts
        if obj.cls in _ANIMAL_PARTS:
            parts = _animal_parts(c, visible, _ANIMAL_PARTS[obj.cls])
        elif parts is not None:
            parts = [(name, mask & visible) for name, mask in parts]
        mat_objects.append((obj.cls, visible, parts))
        if obj.cls == PERSON_CLASS_IND and visible.any():
            flagged = True
        salient |= visible
    if flagged:
        for cls, _, parts in mat_objects:
            if cls == PERSON_CLASS_IND and parts is not None:
                for name, mask in parts:
                    parts_map[mask] = HUMAN_PART_GROUPS[name]
    if scenario == 'no_person':
        salient[:] = False
    near = _neighbour_differs(c.label > 0) & (c.label > 0) if scenario == 'no_person' else np.zeros((h, w), bool)
    saliency = _saliency_png(salient, near, rng)

    normals_png = _encode_normals(c.normals)
    valid = np.isin(label_map, list(NORMALS_VALID_CONTEXT_IDS))
    normals = (2.0 * normals_png.astype(np.float64) / 255.0 - 1.0).astype(np.float32)
    normals[~valid] = 0

    _save_jpg(osp.join(root, 'JPEGImages', f'{img_id}.jpg'), image)
    _save_mat(osp.join(root, 'pascal-context', 'trainval', f'{img_id}.mat'), {'LabelMap': label_map})
    _save_png(osp.join(root, 'semseg', 'pascal-context', f'{img_id}.png'), semseg)
    voc12 = index % 4 == 1
    if voc12:  # VOC-style void (255) on class borders; this file takes precedence
        semseg = semseg.copy()
        semseg[_neighbour_differs(semseg)] = 255
        palette = [v for rgb in voc_palette(256)[:255] for v in rgb] + [224, 224, 192]
        _save_png(osp.join(root, 'semseg', 'VOC12', f'{img_id}.png'), semseg, palette)
    _save_mat(osp.join(root, 'human_parts', f'{img_id}.mat'), {'anno': _anno(img_id, mat_objects)})
    _save_png(osp.join(root, 'normals_distill', f'{img_id}.png'), normals_png)
    _save_png(osp.join(root, 'sal_distill', f'{img_id}.png'), saliency)

    classes_cache = [cls if mask.any() else -1 for cls, mask, _ in mat_objects]
    targets = dict(semseg=semseg, human_parts=parts_map, sal=salient.astype(np.float32), normals=normals,
                   label_map=label_map, saliency_png=saliency)
    info = dict(size=(h, w), scenario=scenario, has_human_parts=flagged, voc12=voc12, classes=classes_cache,
                has_sky=bool((label_map == CONTEXT_IDS['sky']).any()))
    return targets, info


# --------------------------------------------------------------------------- NYUD
def _nyud_image(img_id: str, index: int, size: Tuple[int, int], rng, root: str) -> Tuple[dict, dict]:
    h, w = size
    c = _Canvas(h, w)
    horizon = rng.uniform(0.45, 0.6) * h
    wall_depth = rng.uniform(3, 6)
    c.paint(c.yy < horizon, 1001, 1, _unit([0, 0, 1]), wall_depth)
    c.paint(c.yy >= horizon, 1002, 2, _unit([0, 0.82, 0.57]), _floor_depth(c, horizon, wall_depth))
    ceiling = c.yy < rng.uniform(0.1, 0.2) * h
    c.paint(ceiling, 1022, 22, _unit([0, -0.82, 0.57]), wall_depth * (0.8 + 0.2 * c.yy / h))
    mounted = 11 if index % 2 else 9  # picture or window on the wall
    c.paint(c.rect(0.25 * h, horizon - 0.05 * h, 0.6 * w, 0.85 * w), 1000 + mounted, mounted, _unit([0, 0, 1]),
            wall_depth - 0.02)
    unlabeled = c.rect(0.22 * h, 0.35 * h, 0.1 * w, 0.3 * w)
    c.paint(unlabeled, 1000, 0, _unit([0, 0, 1]), wall_depth)

    classes = [40] + list(rng.choice(_NYUD_OBJECTS[:-1], size=2, replace=False))
    objects = [_make_object(c, rng, int(k), 1000 + int(k), horizon, wall_depth, 'sphere' if k == 40 else 'box',
                            cx=(0.15 + 0.35 * j) * w) for j, k in enumerate(classes)]
    if index % 3 == 0:
        objects.append(_make_person(c, rng, NYUD_PERSON, 1000 + NYUD_PERSON, horizon, wall_depth, False))
    _paint_objects(c, objects)
    image = _render(c, rng)

    seg = c.label.astype(np.uint8)
    depth = c.depth.astype(np.float32)
    normals = c.normals.astype(np.float32)
    invalid = (c.xx < 2) | (unlabeled & (c.xx < 0.2 * w))   # Kinect border and a glass patch
    invalid |= rng.random((h, w)) < 0.01
    depth[invalid] = 0
    normals[invalid] = 0
    normals[rng.random((h, w)) < 0.01] = 0
    edge = _neighbour_differs(seg).astype(np.float32)

    _save_jpg(osp.join(root, 'images', f'{img_id}.jpg'), image)
    _save_png(osp.join(root, 'segmentation', f'{img_id}.png'), seg)
    np.save(osp.join(root, 'depth', f'{img_id}.npy'), depth)
    np.save(osp.join(root, 'normals', f'{img_id}.npy'), normals)
    np.save(osp.join(root, 'edge', f'{img_id}.npy'), edge)

    semseg = seg.astype(np.int16) - 1
    semseg[seg == 0] = 255
    targets = dict(semseg=semseg.astype(np.uint8), depth=depth, normals=normals, edge=edge)
    targets['raw_segmentation'] = seg
    info = dict(size=(h, w))
    return targets, info


# --------------------------------------------------------------------------- tree
_LAYOUTS = {
    'pascal': ('JPEGImages', 'ImageSets/Context', 'ImageSets/Parts', 'pascal-context/trainval',
               'semseg/pascal-context', 'semseg/VOC12', 'human_parts', 'normals_distill', 'sal_distill'),
    'nyud': ('images', 'segmentation', 'depth', 'normals', 'edge', 'gt_sets'),
}


def image_size(base: Tuple[int, int], index: int, rng: np.random.Generator) -> Tuple[int, int]:
    """``base`` (H, W) varied by ±20 %; every third image portrait, the others landscape."""
    h, w = (max(8, int(round(s * rng.uniform(0.8, 1.2)))) for s in base)
    small, large = sorted((h, w))
    if small == large:
        large += 2
    return (large, small) if index % 3 == 1 else (small, large)


def _is_empty_dir(path: str) -> bool:
    return osp.isdir(path) and not os.listdir(path)


def generate(dataset: str, out: str, num_train: int = 6, num_val: int = 6, size: Tuple[int, int] = (48, 64),
             seed: int = 0, overwrite: bool = False, progress: Optional[ProgressFn] = None,
             keep_targets: bool = True) -> SyntheticTree:
    """Write a synthetic PASCAL_MT (``'pascal'``) or NYUD_MT (``'nyud'``) tree at ``out``.

    The tree is built in a temporary sibling directory and renamed into place,
    so ``out`` never holds a partial tree.

    Raises:
        FileExistsError: ``out`` exists, is not empty and ``overwrite`` is False.
    """
    if dataset not in _LAYOUTS:
        raise ValueError(f'dataset must be one of {sorted(_LAYOUTS)}, got {dataset!r}')
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ValueError(f'need a positive number of images, got train={num_train} val={num_val}')
    out = osp.abspath(os.fspath(out))
    if osp.exists(out) and not _is_empty_dir(out) and not overwrite:
        raise FileExistsError(f'{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it')
    parent = osp.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(out)}.tmp-', dir=parent)
    splits = {'train': num_train, 'val': num_val}
    tree = SyntheticTree(out, dataset, {})
    try:
        for folder in _LAYOUTS[dataset]:
            os.makedirs(osp.join(tmp, folder), exist_ok=True)
        make = _pascal_image if dataset == 'pascal' else _nyud_image
        total, done = num_train + num_val, 0
        for split, count in splits.items():
            ids = []
            for local in range(count):
                global_index = done
                img_id = f'2008_{global_index:06d}' if dataset == 'pascal' else f'{global_index:06d}'
                rng = np.random.default_rng([seed, 0 if dataset == 'pascal' else 1, global_index])
                targets, info = make(img_id, local, image_size(size, local, rng), rng, tmp)
                info['split'] = split
                if keep_targets:
                    tree.targets[img_id] = targets
                tree.info[img_id] = info
                ids.append(img_id)
                done += 1
                if progress is not None:
                    progress(done, total)
            tree.splits[split] = ids
            split_dir = 'ImageSets/Context' if dataset == 'pascal' else 'gt_sets'
            with open(osp.join(tmp, split_dir, f'{split}.txt'), 'w') as f:
                f.write(''.join(f'{i}\n' for i in ids))
            if dataset == 'pascal':
                with open(osp.join(tmp, 'ImageSets', 'Parts', f'{split}.txt'), 'w') as f:
                    json.dump({i: tree.info[i]['classes'] for i in ids}, f, indent=1)
        os.chmod(tmp, 0o755)
        if osp.exists(out):
            if _is_empty_dir(out):
                os.rmdir(out)
            elif not overwrite:
                raise FileExistsError(f'{out} appeared while generating; not replacing it')
        if osp.exists(out):
            old = tempfile.mkdtemp(prefix=f'.{osp.basename(out)}.old-', dir=parent)
            os.rename(out, osp.join(old, 'tree'))
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tree
