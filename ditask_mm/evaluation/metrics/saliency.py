"""Saliency: the per-image no-beta mIoU of the tables, and two maxF variants.

The prediction is a probability p in [0, 1] (the reference's ``pred / 255``,
already sigmoided); the ground truth is {0, 1}, with 255 only as padding
(ignored). g = (gt ≠ 0) on valid pixels.

* **Per-image meter, 15 thresholds** T = ``np.linspace(0.2, 0.9, 15)``, mask
  m = (p > t) (strict). Per image i: J = |g∧m| / |g∨m| (J = 1 when both are
  empty), P = tp / (tp + fp + 1e-12), R = tp / (tp + fn + 1e-12).

  - ``mIoU`` = max_t mean_i J_{i,t} (the DiTASK/MTLoRA "Saliency mIoU");
  - ``maxF`` = max_t 2·P̄·R̄ / (P̄ + R̄ + 1e-12) with P̄, R̄ the per-image
    means (β² = 1, the MTI-Net "maxF");
  - ``threshold`` = the t of ``mIoU`` (first one on ties), chosen on the
    evaluated set itself as the reference does.

  Images without a valid pixel are left out of the per-image means.
* **Pooled meter, β² = 0.3** (ATRC ``MaxF``): mask m = (p ≥ t) (inclusive)
  for the 19 thresholds of ``torch.arange(0.05, 1, 0.05)`` in float32
  (:data:`POOLED_THRESHOLDS`; 0.6 is 0.59999996 there). TP, PP (predicted
  positives) and AP (actual positives) are summed over all valid pixels of
  the set; P = TP/PP, R = TP/AP, F = 1.3·P·R / (0.3·P + R), undefined values
  set to 0 (e.g. no predicted positive at a threshold). Reported as
  ``maxF_beta0.3``.

**Comparison dtype.** Both reference meters turn the prediction into a
float32 tensor (``pred.float() / 255``) before thresholding, and PyTorch
compares a float32 tensor with a Python float (the per-image thresholds) or
a float32 0-dim tensor (the pooled ones) in float32. So every prediction is
first rounded to float32 (exact for float16, round-to-nearest for float64)
and compared with float32 thresholds: ``float32(linspace value)`` with ``>``,
the float32 ``arange`` values with ``>=``. A float16 0.3 (0.30004883) is
thus *above* the per-image threshold 0.3 (0.30000001), and a float32 0.2 is
*at* the threshold 0.2, not above it.

**Reference bugs, off by default** (arguments of :class:`SaliencyEvaluator`,
given as ``sal_<name>`` to :class:`~ditask_mm.evaluation.MultiTaskMetric`):

* ``beta_double_sigmoid``: the public code's "Beta maxF" applies a sigmoid to
  ``pred / 255``, which is already a probability. With the option the pooled
  meter thresholds sigmoid(float32(p)) (sigmoid evaluated by PyTorch in
  float32, see :func:`sigmoid_float32`) instead of p: every p ≥ 0 is
  positive at t ≤ 0.5 and nothing is at t ≥ 0.75.
* ``batch_of_one_rows``: the public per-image meter squeezes a batch of one
  image to [H, W] and then iterates over its rows, adding H row-level J/P/R
  entries instead of one image-level entry. With the option, the images of a
  batch of one (see :meth:`SaliencyEvaluator.batch_stats`) store one J/P/R
  row per image row holding a valid pixel, and the means run over entries.

``mIoU``, ``maxF`` and ``maxF_beta0.3`` are in **percent**.
"""
import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from ._common import NAN, TaskEvaluator, squeeze_channel, warn_empty


def torch_arange_float32(start: float, stop: float, step: float, lanes: int = 8) -> np.ndarray:
    """The values of ``torch.arange(start, stop, step, dtype=torch.float32)`` on a CPU.

    PyTorch's CPU kernel takes ``ceil((stop - start) / step)`` values. It
    fills whole pairs of ``lanes``-wide vectors first: each vector's first
    value ``start + step * i`` is computed in float64 and rounded to
    float32, and the lane j value is ``float32(base + j * step)`` with that
    rounded base, in float64. The remaining values are
    ``float32(start + step * i)``. Hence 0.6 of ``arange(0.05, 1, 0.05)``
    is 0.59999996, one float32 step below the nearest float32 to 0.6.

    Args:
        start: First value.
        stop: Exclusive end.
        step: Increment.
        lanes: float32 lanes of PyTorch's CPU vectors (8 for its x86 builds).

    Returns:
        float32 array bit-identical to the tensor (checked in the tests).
    """
    count = int(math.ceil((stop - start) / step))
    index = np.arange(count)
    scalar_path = (start + step * index).astype(np.float32)
    vector_start = index - index % lanes
    base = (start + step * vector_start).astype(np.float32).astype(np.float64)
    vector_path = (base + (index - vector_start) * step).astype(np.float32)
    vectorised = index < count - count % (2 * lanes)
    return np.where(vectorised, vector_path, scalar_path)


#: Thresholds of the per-image (no-beta) meter, float64 as in the reference.
IMAGE_THRESHOLDS = np.linspace(0.2, 0.9, 15)
#: Thresholds of the pooled β² = 0.3 maxF: the float32 ``torch.arange(0.05, 1, 0.05)``.
POOLED_THRESHOLDS = torch_arange_float32(0.05, 1.0, 0.05)
#: dtype in which predictions are compared with the thresholds (the reference's ``pred.float()``).
COMPARE_DTYPE = np.float32
#: The per-image thresholds as PyTorch compares them with a float32 tensor (strict ``>``).
IMAGE_THRESHOLDS_COMPARED = IMAGE_THRESHOLDS.astype(COMPARE_DTYPE)
#: ``s >= t`` equals ``s > nextafter(t, -inf)`` for float32 s, which lets the
#: pooled thresholds share the strict counting of :func:`counts_above`.
POOLED_THRESHOLDS_STRICT = np.nextafter(POOLED_THRESHOLDS, COMPARE_DTYPE(-np.inf))
EPS = 1e-12
#: β² of the pooled F-measure.
BETA2 = 0.3


#: ``(pp, tp)``: predicted and true positives per threshold.
Counts = Tuple[np.ndarray, np.ndarray]


def counts_above(scores: np.ndarray, positive: np.ndarray, valid: np.ndarray,
                 threshold_sets: Sequence[np.ndarray]) -> List[Counts]:
    """Predicted and true positives of ``scores > t`` for several threshold sets.

    One ``searchsorted`` over the union of the sets: with U the sorted
    thresholds and k = #(U < score), ``score > U[u]`` iff ``k > u`` (``u`` the
    first position of that value), so a histogram of k gives every count.

    Args:
        scores: Floating scores, shape (H, W); compared in their own dtype.
        positive: Boolean ground-truth mask, same shape.
        valid: Boolean mask of the pixels to count, same shape.
        threshold_sets: Increasing thresholds, each of shape (K_i,).

    Returns:
        Per set, ``(pp, tp)``: int64 arrays of shape (K_i,) with
        ``pp[j] = #(valid ∧ score > t_j)`` and ``tp[j] = #(valid ∧ positive ∧
        score > t_j)``. NaN scores are never above a threshold.
    """
    sets = [t.astype(scores.dtype) for t in threshold_sets]
    union = np.sort(np.concatenate(sets))
    bins = len(union) + 1
    k = np.searchsorted(union, scores, side='left')
    k[np.isnan(scores)] = 0
    code = np.where(valid, k + bins * positive, 2 * bins)
    hist = np.bincount(code.ravel(), minlength=2 * bins + 1)
    # above[u] = #(k > u - 1) = #(k >= u): reverse cumulative sums
    above_pos = np.cumsum(hist[bins:2 * bins][::-1])[::-1]
    above_all = np.cumsum((hist[:bins] + hist[bins:2 * bins])[::-1])[::-1]
    result = []
    for thresholds in sets:
        first = np.searchsorted(union, thresholds, side='left') + 1
        result.append((above_all[first].astype(np.int64), above_pos[first].astype(np.int64)))
    return result


def compared_scores(pred: np.ndarray) -> np.ndarray:
    """``pred`` as the reference thresholds it: a (writable) float32 copy."""
    return pred.astype(COMPARE_DTYPE)


def sigmoid_float32(scores: np.ndarray) -> np.ndarray:
    """PyTorch's float32 sigmoid of float32 ``scores`` (the reference's second squash).

    PyTorch's float32 sigmoid kernels (CPU vectorised, CPU scalar, CUDA) may
    disagree in the last bit, so a score within one float32 step (about
    6e-8) of a threshold can fall on the other side than in the reference,
    which ran on a GPU and over whole batches.
    """
    return torch.sigmoid(torch.from_numpy(np.array(scores, dtype=np.float32))).numpy()


def jaccard_precision_recall(tp: np.ndarray, pp: np.ndarray,
                             n_pos: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """J, P and R of the per-image meter from the counts at each threshold.

    Args:
        tp: True positives per threshold.
        pp: Predicted positives per threshold.
        n_pos: Ground-truth positives.

    Returns:
        float64 arrays ``(jaccard, precision, recall)`` of the shape of ``tp``;
        J = 1 where both the mask and the ground truth are empty.
    """
    tp, pp = tp.astype(np.float64), pp.astype(np.float64)
    union = pp + n_pos - tp
    jaccard = np.ones_like(tp)
    np.divide(tp, union, out=jaccard, where=union > 0)
    return jaccard, tp / (pp + EPS), tp / (n_pos + EPS)


class SaliencyEvaluator(TaskEvaluator):
    """Per-image J/P/R at 15 thresholds and pooled counts at 19 thresholds.

    Args:
        ignore_index: Ground-truth value of ignored (padding) pixels.
        beta_double_sigmoid: Reproduce the public code's bug of squashing the
            probabilities again before the pooled β² = 0.3 meter (see the
            module docstring). Off by default.
        batch_of_one_rows: Reproduce the public code's bug of scoring the
            image of a batch of one row by row in the per-image meter (see
            :meth:`batch_stats`). Off by default.
    """

    task = 'sal'
    delta_metric = 'mIoU'
    percent_keys = ('mIoU', 'maxF', 'maxF_beta0.3')

    def __init__(self, ignore_index: int = 255, beta_double_sigmoid: bool = False,
                 batch_of_one_rows: bool = False) -> None:
        self.ignore_index = ignore_index
        self.beta_double_sigmoid = beta_double_sigmoid
        self.batch_of_one_rows = batch_of_one_rows

    def batch_stats(self, pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> List[Dict[str, Any]]:
        """Statistics of the images of one evaluation batch, one dict per image.

        With ``batch_of_one_rows``, the image of a batch holding a single
        image gets :meth:`row_stats` (the reference's bug); otherwise every
        image gets :meth:`image_stats`.

        Args:
            pairs: ``(pred, gt)`` of each image of the batch, in order.
        """
        if self.batch_of_one_rows and len(pairs) == 1:
            return [self.row_stats(*pairs[0])]
        return [self.image_stats(pred, gt) for pred, gt in pairs]

    def _masks(self, pred: np.ndarray, gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(scores, positive, valid)``: float32 scores and boolean masks, (H, W)."""
        scores = compared_scores(squeeze_channel(pred, self.task))
        gt = squeeze_channel(gt, self.task)
        valid = gt != self.ignore_index
        return scores, valid & (gt != 0), valid

    def _threshold_counts(self, scores: np.ndarray, positive: np.ndarray,
                          valid: np.ndarray) -> Tuple[Counts, Counts]:
        """``(pp, tp)`` at the per-image thresholds and at the pooled ones."""
        if self.beta_double_sigmoid:
            (image_counts,) = counts_above(scores, positive, valid, (IMAGE_THRESHOLDS_COMPARED,))
            (pooled_counts,) = counts_above(sigmoid_float32(scores), positive, valid,
                                            (POOLED_THRESHOLDS_STRICT,))
            return image_counts, pooled_counts
        image_counts, pooled_counts = counts_above(scores, positive, valid,
                                                   (IMAGE_THRESHOLDS_COMPARED, POOLED_THRESHOLDS_STRICT))
        return image_counts, pooled_counts

    def image_stats(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        """Statistics of one image.

        Args:
            pred: Probabilities, shape (1, H, W) or (H, W), any float or
                integer dtype (compared after rounding to float32).
            gt: {0, 1} map of the same spatial shape (255 = ignore).

        Returns:
            ``jaccard``, ``precision``, ``recall``: float64 arrays of shape
            (15,) (one value per threshold of :data:`IMAGE_THRESHOLDS`);
            ``tp`` and ``pp``: int64 arrays of shape (19,) (per threshold of
            :data:`POOLED_THRESHOLDS`); ``ap`` and ``n_valid``: ints.
        """
        scores, positive, valid = self._masks(pred, gt)
        n_pos = int(positive.sum())
        (pp, tp), (pooled_pp, pooled_tp) = self._threshold_counts(scores, positive, valid)
        jaccard, precision, recall = jaccard_precision_recall(tp, pp, n_pos)
        return dict(jaccard=jaccard, precision=precision, recall=recall, tp=pooled_tp, pp=pooled_pp,
                    ap=n_pos, n_valid=int(valid.sum()))

    def row_stats(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        """Statistics of one image scored row by row (the reference's B = 1 bug).

        The pooled counts, ``ap`` and ``n_valid`` are those of
        :meth:`image_stats` (the reference's pooled meter handles B = 1).

        Returns:
            As :meth:`image_stats`, but ``jaccard``, ``precision`` and
            ``recall`` have shape (R, 15): one row-level entry per image row
            holding a valid pixel (R = H without padding).
        """
        stats = self.image_stats(pred, gt)
        scores, positive, valid = self._masks(pred, gt)
        per_row: Dict[str, List[np.ndarray]] = dict(jaccard=[], precision=[], recall=[])
        for row in range(scores.shape[0]):
            if not valid[row].any():
                continue
            ((pp, tp),) = counts_above(scores[row:row + 1], positive[row:row + 1], valid[row:row + 1],
                                       (IMAGE_THRESHOLDS_COMPARED,))
            values = jaccard_precision_recall(tp, pp, int(positive[row].sum()))
            for key, value in zip(per_row, values):
                per_row[key].append(value)
        width = len(IMAGE_THRESHOLDS)
        for key, rows in per_row.items():
            stats[key] = np.reshape(np.array(rows, dtype=np.float64), (-1, width))
        return stats

    def reduce(self, stats: Sequence[Dict[str, Any]]) -> Dict[str, float]:
        """``mIoU``, ``maxF``, ``maxF_beta0.3`` (percent) and ``threshold``.

        The per-image means run over entries: one per image, or one per row
        for the images of :meth:`row_stats`.
        """
        kept = [s for s in stats if s['n_valid'] > 0]
        if not kept:
            warn_empty(self.task)
            return {'mIoU': NAN, 'maxF': NAN, 'maxF_beta0.3': NAN, 'threshold': NAN}
        width = len(IMAGE_THRESHOLDS)

        def entry_mean(key: str) -> np.ndarray:
            return np.mean(np.concatenate([np.reshape(s[key], (-1, width)) for s in kept]), axis=0)

        mean_j, mean_p, mean_r = entry_mean('jaccard'), entry_mean('precision'), entry_mean('recall')
        f1 = 2 * mean_p * mean_r / (mean_p + mean_r + EPS)
        best = int(np.argmax(mean_j))
        return {
            'mIoU': 100.0 * float(mean_j[best]),
            'maxF': 100.0 * float(f1.max()),
            'maxF_beta0.3': 100.0 * float(self.pooled_f(kept).max()),
            'threshold': float(IMAGE_THRESHOLDS[best]),
        }

    def pooled_f(self, stats: Sequence[Dict[str, Any]]) -> np.ndarray:
        """F_β per pooled threshold, shape (19,), 0 where undefined."""
        tp = np.sum([s['tp'] for s in stats], axis=0).astype(np.float64)
        pp = np.sum([s['pp'] for s in stats], axis=0).astype(np.float64)
        ap = float(sum(s['ap'] for s in stats))
        with np.errstate(divide='ignore', invalid='ignore'):
            precision = tp / pp
            recall = tp / ap
            f = (1 + BETA2) * precision * recall / (BETA2 * precision + recall)
        return np.nan_to_num(f, nan=0.0, posinf=0.0, neginf=0.0)
