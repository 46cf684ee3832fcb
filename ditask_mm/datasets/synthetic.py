"""Small synthetic PASCAL_MT / NYUD_MT trees in the exact on-disk layout.

Each image is a simple scene: a back wall and a floor (PASCAL also sky or a
ceiling, NYUD a ceiling, a wall-mounted rectangle and an unlabeled patch),
then spheres, boxes and people standing on the floor, painted far to near.
Normals and depth follow from that geometry; an object's colour *and*
texture (stripes, checker or dots, with a class-specific period and
orientation) are functions of its class, so semseg is learnable from the
image. Every task's labels come from the same painted layers, so they agree.

The loader's hard cases (docs/datasets.md) are placed by a fixed
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
from .synthetic_scene import (_animal_parts, _Canvas, _floor_depth, _make_object, _make_person, _neighbour_differs,
                              _paint_objects, _render, _unit)

PASCAL_SCENARIOS = ('person_parts', 'person_no_parts', 'no_person', 'zero_area_person', 'two_persons',
                    'unlabeled_strip')
NYUD_PERSON = 31
_NYUD_OBJECTS = (4, 5, 6, 7, 29, 35, 40)
_PASCAL_OBJECTS = (2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 16, 18, 20)  # valid and invalid normals
_ANIMAL_PARTS = {8: ('head', 'torso', 'tail'), 10: ('head', 'torso', 'muzzle'),
                 12: ('head', 'torso', 'muzzle'), 13: ('head', 'torso', 'tail')}
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
        palette = voc_palette(255).reshape(-1).tolist() + [224, 224, 192]
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
