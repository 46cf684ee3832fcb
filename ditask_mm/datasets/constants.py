"""Constants of PASCAL_MT and NYUD_MT: class names, palettes, id tables.

The reference code derives some of these at run time from its
``data/db_info/*.json`` files, which belong to the reference repositories and
are not shipped here. The derived facts are embedded instead (docs/datasets.md
describes what each task reads).
"""
from typing import Dict, FrozenSet, Tuple

import numpy as np

#: The 21 PASCAL semseg classes, index = label value (0 = background).
PASCAL_CLASSES: Tuple[str, ...] = (
    'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
    'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
    'train', 'tvmonitor')

#: The 40 NYUD-v2 classes, index = label value after the ``k → k − 1`` shift.
#: ('refridgerator' is spelled as in the reference evaluation code.)
NYUD_CLASSES: Tuple[str, ...] = (
    'wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window', 'bookshelf',
    'picture', 'counter', 'blinds', 'desk', 'shelves', 'curtain', 'dresser', 'pillow', 'mirror',
    'floor mat', 'clothes', 'ceiling', 'books', 'refridgerator', 'television', 'paper', 'towel',
    'shower curtain', 'box', 'whiteboard', 'person', 'night stand', 'toilet', 'sink', 'lamp',
    'bathtub', 'bag', 'otherstructure', 'otherfurniture', 'otherprop')

#: The 7 human-part classes (``num_human_parts=6`` grouping plus background).
PARTS_CLASSES: Tuple[str, ...] = ('background', 'head', 'torso', 'uarm', 'larm', 'uleg', 'lleg')

#: VOC class index of ``person`` (PASCAL-Part ``class_ind``; semseg label 15).
PERSON_CLASS_IND = 15

#: 459-class PASCAL-Context id behind each of the 21 semseg indices.
CONTEXT_CATEGORY_LABELS: Tuple[int, ...] = (
    0, 2, 23, 25, 31, 34, 45, 59, 65, 72, 98, 397, 113, 207, 258, 284, 308, 347, 368, 416, 427)

#: A few PASCAL-Context ids used by the synthetic generator and the tests.
CONTEXT_IDS: Dict[str, int] = {
    'person': 284, 'table': 397, 'tvmonitor': 427, 'unknown': 431, 'sky': 360, 'wall': 440,
    'floor': 158, 'ceiling': 68, 'chair': 72, 'sofa': 368, 'bottle': 34, 'car': 59, 'cat': 65,
    'dog': 113, 'bicycle': 23, 'plant': 293, 'pottedplant': 308}

#: PASCAL-Context ids whose pixels keep their (distilled) surface normal; all
#: other LabelMap ids, 0 included, are set to the zero vector (invalid).
NORMALS_VALID_CONTEXT_IDS: FrozenSet[int] = frozenset((
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39,
    41, 43, 46, 49, 50, 51, 53, 55, 56, 59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83,
    84, 85, 87, 88, 95, 96, 101, 104, 105, 107, 111, 113, 115, 122, 124, 135, 141,
    142, 143, 146, 150, 154, 157, 158, 159, 165, 172, 174, 181, 183, 184, 191, 193,
    195, 197, 199, 202, 213, 215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238,
    239, 242, 243, 246, 250, 251, 252, 255, 260, 261, 263, 269, 272, 273, 275, 281,
    283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295, 304, 307, 309, 310, 314,
    315, 319, 323, 329, 330, 331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368,
    370, 371, 374, 379, 380, 383, 384, 397, 401, 403, 405, 407, 408, 411, 412, 413,
    414, 417, 419, 421, 423, 427, 429, 430, 432, 440, 441, 442, 443, 444, 446, 454,
    457))

#: The 24 PASCAL-Part person part names and their 7-class group value.
HUMAN_PART_GROUPS: Dict[str, int] = {
    **{name: 1 for name in ('hair', 'head', 'lear', 'rear', 'lebrow', 'rebrow', 'leye', 'reye',
                            'mouth', 'nose')},
    **{name: 2 for name in ('torso', 'neck')},
    **{name: 3 for name in ('luarm', 'ruarm')},
    **{name: 4 for name in ('llarm', 'rlarm', 'lhand', 'rhand')},
    **{name: 5 for name in ('luleg', 'ruleg')},
    **{name: 6 for name in ('llleg', 'rlleg', 'lfoot', 'rfoot')},
}

#: Task names each dataset provides, in the reference order.
PASCAL_TASKS: Tuple[str, ...] = ('semseg', 'human_parts', 'sal', 'normals', 'edge')
NYUD_TASKS: Tuple[str, ...] = ('semseg', 'depth', 'normals', 'edge')


def voc_palette(num: int) -> np.ndarray:
    """The PASCAL VOC colour map, its first ``num`` entries as a ``(num, 3)`` RGB ``uint8`` array.

    The colours interleave the label's bits: bit ``3j`` of the label goes to
    bit ``7 - j`` of red, bit ``3j + 1`` to green and bit ``3j + 2`` to blue
    (label 15, ``person``, is ``(192, 128, 128)``).

    Args:
        num: Number of colours (labels ``0 .. num - 1``), at least 0.

    Raises:
        ValueError: If ``num`` is not a non-negative int.
    """
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
        raise ValueError(f'voc_palette(num): num must be a non-negative int (number of colours), got {num!r}')
    palette = np.zeros((num, 3), dtype=np.uint8)
    for index in range(num):
        value, rgb = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette[index] = rgb
    return palette


#: PASCAL's 21 semseg classes (0 = background, 15 = person → (192, 128, 128)), ``(21, 3)``.
PASCAL_PALETTE: np.ndarray = voc_palette(21)
#: The 7 human-part classes (background, head, torso, upper/lower arms, upper/lower legs), ``(7, 3)``.
PARTS_PALETTE: np.ndarray = voc_palette(7)
#: NYUD labels 0..39 use VOC colours 1..40 (black is left for ignore/unlabeled), ``(40, 3)``.
NYUD_PALETTE: np.ndarray = voc_palette(41)[1:]
for _palette in (PASCAL_PALETTE, PARTS_PALETTE, NYUD_PALETTE):
    _palette.setflags(write=False)
del _palette
