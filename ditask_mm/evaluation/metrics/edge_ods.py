"""Edges: odsF, oisF and AP of the BSDS boundary benchmark, scored as SEISM scores them.

The published edge numbers of PASCAL-Context and NYUD-v2 come from the
MATLAB SEISM toolbox run on the saved edge PNGs (``docs/datasets.md`` M5).
This evaluator reproduces that protocol in Python, with the BSDS pixel
matching (``correspondPixels``), the ``bwmorph('thin', Inf)`` thinning and
the optional edge NMS of the ``pyedgeeval`` package:

1. **PNG values.** The reference writes ``255·p`` with a cast to ``uint8``
   (truncation) and SEISM reads it back as ``v / 255``. So a probability
   map p becomes v = floor(255·p) (computed in float32, as PyTorch does);
   a ``uint8`` map is taken as the PNG values themselves, which makes the
   online numbers and those of a folder of PNGs the same
   (:func:`edge_png_values`).
2. **NMS** (``nms=True``, off by default): the structured-edge NMS that the
   InvPT family runs in MATLAB before SEISM (``pyEdgeEval``'s ``fast_nms``:
   triangle smoothing of radius 1, orientation from radius 4, r = 1, s = 5,
   m = 1.01), rounded back to ``uint8`` like MATLAB's ``uint8()``. The
   reference this project follows (the MTI-Net/DiTASK code) scores the raw
   PNGs, hence the default.
3. **Per threshold** t in 0.01, 0.02, …, 0.99 (:data:`THRESHOLDS`): the mask
   ``v / 255 > t`` (strict, as SEISM's PNG reader), thinned, is matched
   against the ground-truth edges with a tolerance of ``max_dist`` times
   the image diagonal (0.0075 for PASCAL, 0.011 for NYUD). Per image and
   threshold the statistics are ``cnt_r`` (matched ground-truth pixels),
   ``sum_r`` (ground-truth pixels), ``cnt_p`` (matched predicted pixels) and
   ``sum_p`` (predicted pixels): four arrays of 99 integers.
4. **Reduction** over the set, as SEISM's ``gather_measure``,
   ``general_ods``, ``general_ois`` and ``general_ap``: with the counts
   summed over images, R = cnt_r / sum_r and P = cnt_p / sum_p (R = 0,
   P = 1 where nothing is predicted; R = 1, P = 0 where nothing is to be
   found) and F = 2PR / (P + R) (0 when P + R = 0):

   * ``odsF`` = max_t F_t over the 99 thresholds, without the BSDS
     interpolation between thresholds;
   * ``oisF``: each image's best threshold (the lowest on ties) by its own
     F, then F of the counts summed at those thresholds;
   * ``AP``: precision against recall, one point per distinct recall (the
     lowest threshold's, as MATLAB's ``unique``), linearly interpolated at
     recall 0, 0.01, …, 1 and summed over the points inside the recall
     range, divided by 100.

   All three are in percent. A set without any ground-truth edge pixel
   gives NaN (with a warning).

**Ignored pixels** (ground truth 255, i.e. padding): the image is first
cropped to the bounding box of its valid pixels, so that the matching
tolerance uses the diagonal of the real image; inside the box, ignored
pixels are no ground-truth edge and the prediction there is set to 0 after
NMS, so it never counts as a predicted pixel.

**The matching is randomised.** ``correspondPixels`` solves an assignment
problem in which every pixel gets 6 random "outlier" connections; an
outlier node that no connection reaches (a share of about e^-6 = 0.25 %)
forces a matchable pair apart, so even a perfect prediction loses about
0.25 % of its matches (R ≈ 0.9975; exact with at most 6 matchable pixels,
where the outlier graph is complete). MATLAB seeds that generator from the
clock, so SEISM's numbers vary slightly from run to run. Here the
generator is reseeded with :data:`MATCHING_SEED` before every match
(:func:`seeded_matcher`), which keeps the statistics of the protocol and
makes each image's counts a function of its prediction and ground truth
alone: reruns, worker processes and ranks all give the same numbers.

**Distributed evaluation** is exact: the statistics are integer counts per
image (reproducible, see above), and mmengine gathers one entry per image
across ranks.

**Speed.** 99 matchings per image, about 0.1 s each: on detector-like
predictions (``tools/benchmarks/bench_edge_metric.py``, ``docs/benchmarks.md``)
about 11 s of one CPU core per PASCAL image (375×500 or 448², NMS saves
under 10 %) and 15–26 s per NYUD image, i.e. about 15 core-hours for the
5,105 PASCAL val images. They thus need worker processes: ``num_workers`` scores the images of each evaluation batch in
that many processes (started with ``spawn``, so the launching script must
guard its entry point with ``if __name__ == '__main__'``, as
``tools/train.py`` and ``tools/test.py`` do).
"""
import ctypes
import functools
import importlib
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._common import NAN, TaskEvaluator, log, squeeze_channel, warn_empty
from .edge import EdgeProxyEvaluator

#: The 99 SEISM thresholds 0.01 … 0.99 (the values of ``'%.2f'`` strings, read back as doubles).
THRESHOLDS = np.arange(1, 100) / 100.0
#: Matching tolerance, as a fraction of the image diagonal, of the PASCAL-Context protocol.
PASCAL_MAX_DIST = 0.0075
#: Matching tolerance of the NYUD-v2 protocol.
NYUD_MAX_DIST = 0.011
#: The four per-threshold counts of one image, in this order.
COUNT_KEYS = ('cnt_r', 'sum_r', 'cnt_p', 'sum_p')
#: Recall points of the AP interpolation (SEISM's ``0:.01:1``).
AP_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
PERCENT = 100.0
#: Seed of the matching's random generator, set before every match (0 would mean "from the clock").
MATCHING_SEED = 1
#: C++ symbols of ``Random::reseed(unsigned long)`` and ``Random::rand``, the generator of the BSDS matching.
RESEED_SYMBOL = '_ZN6Random6reseedEm'
GENERATOR_SYMBOL = '_ZN6Random4randE'
INSTALL_HINT = ('the edge metric (odsF) needs the pyedgeeval package: pip install pyedgeeval==0.2.8 (it builds '
                'from source and needs a C++ compiler; see requirements/pinned.txt). Without it, evaluate edges '
                'with the BCE proxy only: MultiTaskMetric(..., edge_ods=False)')


def load_pyedgeeval() -> Tuple[Callable, Callable, Callable]:
    """``pyEdgeEval``'s ``correspond_pixels``, ``binary_thin`` and ``fast_nms``.

    Raises:
        ImportError: If ``pyEdgeEval`` (or one of its compiled helpers) cannot
            be imported; the message says how to install it.
    """
    try:
        from pyEdgeEval._lib import correspond_pixels
        from pyEdgeEval.preprocess import binary_thin, fast_nms
    except ImportError as error:
        raise ImportError(f'{INSTALL_HINT} (import failed: {error})') from error
    return correspond_pixels, binary_thin, fast_nms


@functools.lru_cache(maxsize=None)
def seeded_matcher() -> Callable[..., tuple]:
    """``correspond_pixels`` with its random generator reseeded to :data:`MATCHING_SEED` before each call.

    The compiled helper exports the generator and its ``reseed`` method;
    when a build does not (another compiler's name mangling), the plain
    function is returned and a warning says that the counts are then not
    reproducible.
    """
    correspond_pixels = load_pyedgeeval()[0]
    try:
        library = ctypes.CDLL(importlib.import_module('pyEdgeEval._lib.correspond_pixels').__file__)
        reseed = library[RESEED_SYMBOL]
        generator = ctypes.addressof(ctypes.c_char.in_dll(library, GENERATOR_SYMBOL))
    except (OSError, AttributeError, ValueError) as error:
        log(f'edge: cannot seed the BSDS matching ({error}); its counts vary by a few pixels between runs, '
            f'ranks and worker processes, as MATLAB\'s do', logging.WARNING)
        return correspond_pixels
    reseed.argtypes, reseed.restype = [ctypes.c_void_p, ctypes.c_uint64], None

    def match(predicted: np.ndarray, gt: np.ndarray, max_dist: float) -> tuple:
        reseed(generator, MATCHING_SEED)
        return correspond_pixels(predicted, gt, max_dist=max_dist)

    return match


def edge_png_values(pred: np.ndarray) -> np.ndarray:
    """The ``uint8`` values of the edge PNG the reference would write for ``pred``.

    Args:
        pred: Edge probabilities in [0, 1] (any float dtype), or the ``uint8``
            values of a PNG (returned unchanged); any shape.

    Returns:
        ``uint8`` array of the same shape: floor(255·p), with 255·p computed
        in float32.

    Raises:
        ValueError: If a probability is NaN, infinite or outside [0, 1].
    """
    if pred.dtype == np.uint8:
        return pred
    probs = pred.astype(np.float32)
    if probs.size and not (np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1):
        raise ValueError(f'edge: predictions must be probabilities in [0, 1] (the sigmoid of the logits) or uint8 '
                         f'PNG values, got values in [{np.nanmin(probs)}, {np.nanmax(probs)}]'
                         f'{" with NaN" if np.isnan(probs).any() else ""}')
    return np.floor(np.float32(255) * probs).astype(np.uint8)


def _valid_box(valid: np.ndarray) -> Tuple[slice, slice]:
    """Row and column slices of the bounding box of the ``True`` pixels of a non-empty mask."""
    rows = np.flatnonzero(valid.any(axis=1))
    cols = np.flatnonzero(valid.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def edge_image_counts(png_values: np.ndarray, gt_edges: np.ndarray, valid: np.ndarray, max_dist: float,
                      nms: bool) -> Dict[str, np.ndarray]:
    """BSDS counts of one image at the 99 thresholds (a module-level function, for worker processes).

    Args:
        png_values: ``uint8`` PNG values of the prediction, shape (H, W).
        gt_edges: Boolean ground-truth edges, shape (H, W).
        valid: Boolean mask of the pixels that count, shape (H, W).
        max_dist: Matching tolerance as a fraction of the image diagonal.
        nms: Apply the edge NMS before thresholding.

    Returns:
        ``cnt_r``, ``sum_r``, ``cnt_p``, ``sum_p``: int64 arrays of shape (99,)
        (all zero for an image without valid pixels).
    """
    counts = {key: np.zeros(len(THRESHOLDS), np.int64) for key in COUNT_KEYS}
    if not valid.any():
        return counts
    _, binary_thin, fast_nms = load_pyedgeeval()
    match = seeded_matcher()
    rows, cols = _valid_box(valid)
    values, valid = png_values[rows, cols], valid[rows, cols]
    gt = gt_edges[rows, cols] & valid
    if nms:
        values = fast_nms(values, return_as_uint8=True)
    scores = values / 255.0
    scores[~valid] = 0.0
    counts['sum_r'][:] = gt.sum()
    above_before = -1
    for index, threshold in enumerate(THRESHOLDS):
        above = scores > threshold
        above_count = int(above.sum())
        if above_count == above_before:  # masks are nested: same count, same mask, same counts
            for key in ('cnt_r', 'cnt_p', 'sum_p'):
                counts[key][index] = counts[key][index - 1]
            continue
        above_before = above_count
        if above_count == 0:
            continue  # nothing predicted: no match, sum_p = 0
        predicted = binary_thin(above)
        counts['sum_p'][index] = predicted.sum()
        if gt.any():
            pred_matches, gt_matches, _, _ = match(predicted, gt, max_dist)
            counts['cnt_p'][index] = np.count_nonzero(pred_matches)
            counts['cnt_r'][index] = np.count_nonzero(gt_matches)
    return counts


def recall_precision(cnt_r: np.ndarray, sum_r: np.ndarray, cnt_p: np.ndarray,
                     sum_p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Recall and precision with SEISM's conventions for empty counts (any matching shapes).

    R = 0 and P = 1 where nothing is predicted (``sum_p = 0``), R = 1 and
    P = 0 where there is nothing to find (``sum_r = 0``, predictions or not).
    """
    cnt_r, sum_r, cnt_p, sum_p = (np.asarray(a, np.float64) for a in (cnt_r, sum_r, cnt_p, sum_p))
    with np.errstate(invalid='ignore', divide='ignore'):
        recall = np.where(sum_r > 0, cnt_r / sum_r, 1.0)
        precision = np.where(sum_p > 0, cnt_p / sum_p, 1.0)
    recall = np.where((sum_p == 0) & (sum_r > 0), 0.0, recall)
    precision = np.where(sum_r == 0, 0.0, precision)
    return recall, precision


def f_measure(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """2PR / (P + R), 0 where P + R = 0."""
    total = recall + precision
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(total > 0, 2.0 * precision * recall / np.where(total > 0, total, 1.0), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """SEISM's AP of a precision-recall curve (one point per threshold), as a fraction."""
    distinct, first = np.unique(recall, return_index=True)
    if distinct.size < 2:
        return 0.0
    interpolated = np.interp(AP_RECALL_POINTS, distinct, precision[first], left=np.nan, right=np.nan)
    return float(np.nansum(interpolated) / 100.0)


def _spawned_pool(num_workers: int) -> ProcessPoolExecutor:
    """Worker processes started with ``spawn`` (no fork of a process that runs PyTorch threads)."""
    return ProcessPoolExecutor(max_workers=num_workers, mp_context=multiprocessing.get_context('spawn'))


class EdgeODSEvaluator(TaskEvaluator):
    """odsF, oisF and AP of the BSDS/SEISM protocol, with the BCE proxy alongside.

    Per image the statistics are the four count arrays of
    :func:`edge_image_counts` and, under ``bce``, those of
    :class:`~ditask_mm.evaluation.metrics.edge.EdgeProxyEvaluator`, which
    costs nothing next to the matching and keeps ``edge.bce_proxy`` in the
    results for the training curves.

    Args:
        max_dist: Matching tolerance as a fraction of the image diagonal:
            :data:`PASCAL_MAX_DIST` (0.0075) or :data:`NYUD_MAX_DIST` (0.011).
        nms: Thin the prediction with the edge NMS before thresholding (the
            InvPT-family protocol); off in the reference this project follows.
        num_workers: Worker processes that score the images of a batch (0:
            in this process); see the module docstring.
        ignore_index: Ground-truth value of ignored (padding) pixels.

    Raises:
        ImportError: If ``pyEdgeEval`` cannot be imported (the message says
            how to install it).
        ValueError: If ``max_dist`` is not positive or ``num_workers`` is
            negative.
    """

    task = 'edge'
    delta_metric = 'odsF'
    percent_keys = ('odsF', 'oisF', 'AP')
    lower_is_better = ('bce_proxy', )

    def __init__(self, max_dist: float = PASCAL_MAX_DIST, nms: bool = False, num_workers: int = 0,
                 ignore_index: int = 255) -> None:
        load_pyedgeeval()
        if not max_dist > 0:
            raise ValueError(f'edge: max_dist is a fraction of the image diagonal and must be > 0, got {max_dist} '
                             f'(PASCAL {PASCAL_MAX_DIST}, NYUD {NYUD_MAX_DIST})')
        if int(num_workers) != num_workers or num_workers < 0:
            raise ValueError(f'edge: num_workers must be an integer >= 0, got {num_workers!r}')
        self.max_dist = float(max_dist)
        self.nms = bool(nms)
        self.num_workers = int(num_workers)
        self.ignore_index = ignore_index
        self.proxy = EdgeProxyEvaluator(ignore_index=ignore_index)
        self._pool: Optional[ProcessPoolExecutor] = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state['_pool'] = None  # worker processes do not travel
        return state

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if getattr(self, '_pool', None) is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:
        self.close()

    def _prepare(self, pred: np.ndarray, gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PNG values, ground-truth edges and valid mask of one image, each of shape (H, W)."""
        pred = squeeze_channel(pred, self.task)
        gt = squeeze_channel(gt, self.task)
        valid = gt != self.ignore_index
        return edge_png_values(pred), (gt >= 0.5) & valid, valid

    def image_stats(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        """Statistics of one image.

        Args:
            pred: Edge probabilities in [0, 1] (or ``uint8`` PNG values), shape
                (1, H, W) or (H, W).
            gt: {0, 1} edge map of the same spatial shape (255 = ignore).

        Returns:
            ``cnt_r``, ``sum_r``, ``cnt_p``, ``sum_p`` (int64 arrays of shape
            (99,)) and ``bce`` (the proxy's ``sum`` and ``count``).
        """
        counts = edge_image_counts(*self._prepare(pred, gt), self.max_dist, self.nms)
        return dict(counts, bce=self._proxy_stats(pred, gt))

    def _proxy_stats(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        """The BCE proxy's statistics, on probabilities (``uint8`` PNG values divided by 255)."""
        probs = pred / 255.0 if pred.dtype == np.uint8 else pred
        return self.proxy.image_stats(probs, gt)

    def batch_stats(self, pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> List[Dict[str, Any]]:
        """Statistics of a batch's images, scored in ``num_workers`` processes when set."""
        if self.num_workers == 0 or len(pairs) < 2:
            return super().batch_stats(pairs)
        if self._pool is None:
            self._pool = _spawned_pool(self.num_workers)
        prepared = [self._prepare(pred, gt) for pred, gt in pairs]
        futures = [self._pool.submit(edge_image_counts, *arrays, self.max_dist, self.nms) for arrays in prepared]
        return [dict(future.result(), bce=self._proxy_stats(pred, gt))
                for future, (pred, gt) in zip(futures, pairs)]

    def reduce(self, stats: Sequence[Dict[str, Any]]) -> Dict[str, float]:
        """``odsF``, ``oisF``, ``AP`` (percent) and ``bce_proxy`` of the set."""
        metrics = self.proxy.reduce([s['bce'] for s in stats])
        per_image = {key: np.array([s[key] for s in stats], np.int64).reshape(-1, len(THRESHOLDS))
                     for key in COUNT_KEYS}
        totals = {key: value.sum(axis=0) for key, value in per_image.items()}
        if not len(stats) or totals['sum_r'].max() == 0:
            warn_empty(self.task, 'ground-truth edge pixel')
            return dict(odsF=NAN, oisF=NAN, AP=NAN, **metrics)
        recall, precision = recall_precision(*(totals[key] for key in COUNT_KEYS))
        ods = f_measure(recall, precision).max()
        image_f = f_measure(*recall_precision(*(per_image[key] for key in COUNT_KEYS)))
        best = image_f.argmax(axis=1)  # first maximum: the lowest threshold on ties, as MATLAB's max
        rows = np.arange(len(best))
        ois = f_measure(*recall_precision(*(per_image[key][rows, best].sum() for key in COUNT_KEYS)))
        return dict(odsF=PERCENT * float(ods), oisF=PERCENT * float(ois),
                    AP=PERCENT * average_precision(recall, precision), **metrics)
