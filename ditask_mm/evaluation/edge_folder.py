"""Offline edge scoring: a folder of edge PNGs against a dataset's ground truth, as SEISM users do.

``tools/analysis_tools/eval_edges.py`` is the command line of
:func:`score_edge_folder`. The folder holds one PNG per image,
``<image id>.png``, single-channel 8-bit (PIL mode ``L``), with the values
the reference writes (floor(255·p), ``tools/test.py --edge-png-dir`` writes
them). The ground truth is read by the package's own dataset classes and
loader (:class:`~ditask_mm.datasets.PascalContextMTLDataset` with the edges
of the ``.mat`` LabelMap, :class:`~ditask_mm.datasets.NYUDMTLDataset` with
``edge/<id>.npy``; ``docs/datasets.md``), fitted to the size of its image
(the stored pixels, as the paper configs' ``color_ignore_orientation``
reads them) exactly as a test pipeline loads it. The scoring is the online
metric's (:class:`~ditask_mm.evaluation.metrics.edge_ods.EdgeODSEvaluator`,
``docs/datasets.md`` M5), so the numbers equal those of a ``tools/test.py``
run that scored the same values against the same ground truth.

**Scored size.** SEISM scores at the original image size. The paper configs
score online at 448×448 (``FixedResizeMTL(eval_at_resized=True)`` resizes
the ground truth with nearest neighbours, ``docs/datasets.md`` M0), and
``tools/test.py`` writes the PNGs at that size; ``gt_size=(448, 448)``
(``--gt-size 448 448``) resizes the ground truth the same way, which
reproduces the run's numbers.

**Checks before any scoring**, each naming the files: an image of the split
without a PNG is an error (the count and the first ids); a PNG that is not
8-bit single-channel, or whose size is not the ground truth's, is an error.
PNGs of ids outside the split only give a warning: SEISM scores the ids of
the split list and ignores other files, and a folder written for a larger
set (trainval, or the test set of another split file) is a normal thing to
score a subset of. Hidden files (the temporary files of atomic writes) and
files that do not end in ``.png`` are ignored.
"""
import logging
import os
import os.path as osp
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.logging import print_log
from mmengine.utils import ProgressBar
from PIL import Image

from ..datasets import NYUDMTLDataset, PascalContextMTLDataset
from ..datasets.transforms.geometric import interpolation_for
from ..datasets.transforms.loading import LoadMultiTaskAnnotations
from ..tasks import TASKS
from .metrics.edge_ods import NYUD_MAX_DIST, PASCAL_MAX_DIST, EdgeODSEvaluator

__all__ = ['DATASETS', 'EdgeFolderError', 'edge_ground_truth', 'check_prediction_folder', 'read_edge_png',
           'score_edge_folder']

#: Dataset name → (dataset class, default matching tolerance as a fraction of the image diagonal).
DATASETS = dict(pascal=(PascalContextMTLDataset, PASCAL_MAX_DIST), nyud=(NYUDMTLDataset, NYUD_MAX_DIST))
#: How many ids or files an error message lists.
MAX_LISTED = 5
#: The metrics reported, under the keys of ``metrics.json``.
METRIC_KEYS = ('odsF', 'oisF', 'AP')
PNG_MODE = 'L'


class EdgeFolderError(ValueError):
    """A prediction folder that cannot be scored against the split (the message says why and how to fix it)."""


def _listing(items: Sequence[str]) -> str:
    """The first :data:`MAX_LISTED` items, one per line, and how many more there are."""
    shown = '\n  '.join(items[:MAX_LISTED])
    more = f'\n  ... and {len(items) - MAX_LISTED} more' if len(items) > MAX_LISTED else ''
    return f'\n  {shown}{more}'


def _image_size(path: str) -> Tuple[int, int]:
    """(H, W) of an image from its header (the stored pixels, no EXIF rotation)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as error:  # PIL raises many kinds on a damaged file
        raise EdgeFolderError(f'{path}: cannot be read as an image ({type(error).__name__}: {error})') from error
    return height, width


def _png_header(path: str) -> Tuple[str, Tuple[int, int]]:
    """PIL mode and (H, W) of a PNG, from its header."""
    try:
        with Image.open(path) as image:
            if image.format != 'PNG':
                raise EdgeFolderError(f'{path}: a {image.format} file, not a PNG; expected an 8-bit '
                                      f'single-channel PNG of edge values floor(255*p)')
            width, height = image.size
            return image.mode, (height, width)
    except EdgeFolderError:
        raise
    except Exception as error:
        raise EdgeFolderError(f'{path}: cannot be read as a PNG ({type(error).__name__}: {error})') from error


def read_edge_png(path: str) -> np.ndarray:
    """The ``uint8`` values of an edge PNG, shape (H, W).

    Raises:
        EdgeFolderError: If the file is not an 8-bit single-channel PNG.
    """
    mode, _ = _png_header(path)
    if mode != PNG_MODE:
        raise EdgeFolderError(f'{path}: PNG mode {mode!r}; expected an 8-bit single-channel (mode L) PNG of edge '
                              f'values floor(255*p), as tools/test.py --edge-png-dir writes them')
    with Image.open(path) as image:
        return np.array(image, dtype=np.uint8)


def edge_ground_truth(dataset: str, gt_root: str, split: str = 'val') -> List[dict]:
    """The data-list entries of a split with their edge source (the dataset class's file checks run).

    Args:
        dataset: ``'pascal'`` (PASCAL_MT) or ``'nyud'`` (NYUD_MT).
        gt_root: The dataset directory.
        split: Split name (``ImageSets/Context/<split>.txt`` or
            ``gt_sets/<split>.txt``).

    Returns:
        One entry per image of the split, in split-file order (``img_id``,
        ``img_path`` and ``edge_label_map_path`` or ``edge_path``).

    Raises:
        EdgeFolderError: If ``dataset`` is unknown or the split is empty.
        FileNotFoundError: If the tree lacks the split file or files of the
            split (the dataset's message lists them).
    """
    if dataset not in DATASETS:
        raise EdgeFolderError(f'unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}')
    dataset_class = DATASETS[dataset][0]
    data = dataset_class(data_root=gt_root, split=split, tasks=['edge'], test_mode=True, serialize_data=False)
    entries = [data.get_data_info(i) for i in range(len(data))]
    if not entries:
        raise EdgeFolderError(f'{data.split_file(split)}: the split {split!r} lists no image')
    return entries


def load_edge_gt(entry: dict, image_size: Tuple[int, int], gt_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Ground-truth edges of one entry as float32 {0, 1}, shape (H, W), as the test pipeline loads them.

    ``LoadMultiTaskAnnotations`` decodes the source and fits it to the image
    size; with ``gt_size`` it is then resized as ``FixedResizeMTL`` resizes
    ``gt_edge`` (nearest).
    """
    results = dict(entry, img_shape=image_size, seg_fields=[])
    edges = LoadMultiTaskAnnotations(tasks=('edge',))(results)[TASKS['edge'].gt_key]
    if gt_size is not None and tuple(edges.shape[:2]) != tuple(gt_size):
        height, width = gt_size
        edges = cv2.resize(edges, (width, height), interpolation=interpolation_for(TASKS['edge'].gt_key))
    return edges


def check_prediction_folder(pred_dir: str, entries: Sequence[dict], expected_sizes: Sequence[Tuple[int, int]],
                            gt_size_hint: bool = True) -> List[str]:
    """The PNG path of every entry, after checking names, modes and sizes (see the module docstring).

    Args:
        pred_dir: The folder of ``<image id>.png`` files.
        entries: The split's entries (:func:`edge_ground_truth`).
        expected_sizes: (H, W) of each entry's ground truth.
        gt_size_hint: Suggest ``--gt-size`` when every PNG has one size that
            differs from the ground truth's.

    Raises:
        EdgeFolderError: For missing PNGs, PNGs that are not 8-bit
            single-channel, or sizes that differ from the ground truth's.
    """
    if not osp.isdir(pred_dir):
        raise EdgeFolderError(f'prediction folder {pred_dir!r} does not exist or is not a directory; expected one '
                              f'<image id>.png per image (tools/test.py --edge-png-dir writes them)')
    names = {name[:-4] for name in os.listdir(pred_dir) if name.endswith('.png') and not name.startswith('.')}
    ids = [entry['img_id'] for entry in entries]
    missing = [img_id for img_id in dict.fromkeys(ids) if img_id not in names]
    if missing:
        raise EdgeFolderError(f'{pred_dir}: no PNG for {len(missing)} of the {len(set(ids))} images of the split; '
                              f'missing ids (expected <id>.png):{_listing(missing)}')
    extra = sorted(names - set(ids))
    if extra:
        print_log(f'{pred_dir}: {len(extra)} PNG(s) of images outside the split are not scored:'
                  f'{_listing([name + ".png" for name in extra])}', logger='current', level=logging.WARNING)
    paths = [osp.join(pred_dir, f'{img_id}.png') for img_id in ids]
    headers = [_png_header(path) for path in paths]
    not_8bit = [f'{path} (mode {mode!r})' for path, (mode, _) in zip(paths, headers) if mode != PNG_MODE]
    if not_8bit:
        raise EdgeFolderError(f'{len(not_8bit)} PNG(s) are not 8-bit single-channel (mode L) images of edge values '
                              f'floor(255*p):{_listing(not_8bit)}')
    wrong = [(path, size, expected) for path, (_, size), expected in zip(paths, headers, expected_sizes)
             if size != tuple(expected)]
    if wrong:
        lines = [f'{path}: {size[0]}x{size[1]}, ground truth {expected[0]}x{expected[1]}'
                 for path, size, expected in wrong]
        hint = ''
        sizes = {size for _, (_, size) in zip(paths, headers)}
        if gt_size_hint and len(sizes) == 1:
            height, width = sizes.pop()
            hint = (f'\nevery PNG is {height}x{width}: predictions scored at a fixed size (a config with '
                    f'FixedResizeMTL(eval_at_resized=True)) are scored the same way with --gt-size {height} {width}')
        raise EdgeFolderError(f'{len(wrong)} PNG(s) differ in size (HxW) from their ground truth:'
                              f'{_listing(lines)}{hint}')
    return paths


def _chunks(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


def score_edge_folder(pred_dir: str, gt_root: str, dataset: str, split: str = 'val',
                      max_dist: Optional[float] = None, nms: bool = False, num_workers: int = 0,
                      gt_size: Optional[Tuple[int, int]] = None, progress: bool = True) -> Dict[str, float]:
    """odsF, oisF and AP (percent) of a folder of edge PNGs on a split.

    Args:
        pred_dir: Folder of ``<image id>.png`` files (see the module docstring).
        gt_root: The dataset directory (PASCAL_MT or NYUD_MT layout).
        dataset: ``'pascal'`` or ``'nyud'``.
        split: The split whose ids are scored.
        max_dist: Matching tolerance as a fraction of the image diagonal;
            None: the dataset's (0.0075 PASCAL, 0.011 NYUD).
        nms: Apply the edge NMS before thresholding (the InvPT-family
            protocol; off in the reference).
        num_workers: Worker processes for the matching (0: this process).
            The caller's script must guard its entry point with
            ``if __name__ == '__main__'``.
        gt_size: (H, W) to resize the ground truth to (nearest), as a config
            that scores at a fixed size; None: the original size.
        progress: Show a progress bar on stderr.

    Returns:
        ``edge.odsF``, ``edge.oisF`` and ``edge.AP``, the keys of
        ``metrics.json``.

    Raises:
        EdgeFolderError: For the folder problems listed in the module
            docstring, an unknown dataset or a bad ``gt_size``.
        ImportError: If ``pyedgeeval`` is missing (the message says how to
            install it).
    """
    if gt_size is not None:
        gt_size = tuple(int(s) for s in gt_size)
        if len(gt_size) != 2 or min(gt_size) < 1:
            raise EdgeFolderError(f'gt_size must be (height, width) with positive sizes, got {gt_size}')
    entries = edge_ground_truth(dataset, gt_root, split)
    if max_dist is None:
        max_dist = DATASETS[dataset][1]
    evaluator = EdgeODSEvaluator(max_dist=max_dist, nms=nms, num_workers=num_workers)
    image_sizes = [_image_size(entry['img_path']) for entry in entries]
    expected = [gt_size or size for size in image_sizes]
    paths = check_prediction_folder(pred_dir, entries, expected)
    print_log(f'edge: scoring {len(entries)} PNGs of {pred_dir} against {dataset} {split!r} in {gt_root} '
              f'(max_dist {max_dist}, nms {nms}, ground truth at '
              f'{"%dx%d" % gt_size if gt_size else "the original size"}, {num_workers} worker processes)',
              logger='current')
    bar = ProgressBar(len(entries), file=sys.stderr) if progress else None
    stats = []
    try:
        for chunk in _chunks(len(entries), max(1, 2 * num_workers)):
            pairs = []
            for index in chunk:
                values = read_edge_png(paths[index])
                edges = load_edge_gt(entries[index], image_sizes[index], gt_size)
                if values.shape != edges.shape:  # the loader fits the ground truth to the image: never expected
                    raise EdgeFolderError(f'{paths[index]}: {values.shape[0]}x{values.shape[1]}, ground truth '
                                          f'{edges.shape[0]}x{edges.shape[1]}')
                pairs.append((values, edges))
            stats.extend(evaluator.batch_stats(pairs))
            if bar is not None:
                for _ in chunk:
                    bar.update()
    finally:
        evaluator.close()
        if bar is not None:
            bar.file.write('\n')
    metrics = evaluator.reduce(stats)
    return {f'edge.{key}': metrics[key] for key in METRIC_KEYS}
