"""Scene geometry of the synthetic PASCAL_MT / NYUD_MT generator.

A canvas of per-pixel class, instance, normal and depth maps; a floor and a
back wall; discs, boxes and persons (with part masks) placed in depth; and a
renderer whose colour and texture depend on the class, so that the labels are
learnable from the image. :mod:`ditask_mm.datasets.synthetic` writes the
files.
"""
import colorsys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

_LIGHT = np.array([0.3, 0.5, 0.81]) / np.linalg.norm([0.3, 0.5, 0.81])


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
