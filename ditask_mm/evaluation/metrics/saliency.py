"""Saliency: the no-beta per-image mIoU of the tables, and two maxF variants.

shared/docs/data-and-metrics.md §4.3. The prediction is a probability p in
[0, 1] (already sigmoided; never squashed again here); the ground truth is
{0, 1}, with 255 only as padding (ignored). g = (gt ≠ 0) on valid pixels.

* **Per-image, 15 thresholds** T = ``np.linspace(0.2, 0.9, 15)``, mask
  m = (p > t) (strict). Per image i: J = |g∧m| / |g∨m| (J = 1 when both are
  empty), P = tp / (tp + fp + 1e-12), R = tp / (tp + fn + 1e-12).

  - ``mIoU`` = max_t mean_i J_{i,t} (the DiTASK/MTLoRA "Saliency mIoU");
  - ``maxF`` = max_t 2·P̄·R̄ / (P̄ + R̄ + 1e-12) with P̄, R̄ the per-image
    means (β² = 1, the MTI-Net "maxF");
  - ``threshold`` = the t of ``mIoU`` (first one on ties), chosen on the
    evaluated set itself as the reference does.

  One value per image, whatever the batch size (the reference's B = 1
  row-wise bug is not reproduced). Images without a valid pixel are left out
  of the per-image means.
* **Pooled, β² = 0.3** (ATRC ``MaxF``): thresholds ``np.arange(0.05, 1,
  0.05)`` on the probabilities, TP, PP (predicted positives) and AP (actual
  positives) summed over all valid pixels of the set; P = TP/PP, R = TP/AP,
  F = 1.3·P·R / (0.3·P + R), undefined values set to 0 (e.g. no predicted
  positive at a threshold). Reported as ``maxF_beta0.3``. This is the correct
  version of the reference's "Beta maxF", which squashes twice.

Comparisons are done in the prediction's floating dtype (a float32 0.2 is
*at* the threshold 0.2, as in the PyTorch reference, not above it).
``mIoU``, ``maxF`` and ``maxF_beta0.3`` are in **percent**.
"""
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ._common import NAN, TaskEvaluator, squeeze_channel, warn_empty

#: Thresholds of the per-image (no-beta) meter.
IMAGE_THRESHOLDS = np.linspace(0.2, 0.9, 15)
#: Thresholds of the pooled β² = 0.3 maxF.
POOLED_THRESHOLDS = np.arange(0.05, 1, 0.05)
EPS = 1e-12
#: β² of the pooled F-measure.
BETA2 = 0.3


def counts_above(scores: np.ndarray, positive: np.ndarray, valid: np.ndarray,
                 threshold_sets: Sequence[np.ndarray]) -> List[Tuple[np.ndarray, np.ndarray]]:
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


class SaliencyEvaluator(TaskEvaluator):
    """Per-image J/P/R at 15 thresholds and pooled counts at 19 thresholds.

    Args:
        ignore_index: Ground-truth value of ignored (padding) pixels.
    """

    task = 'sal'
    delta_metric = 'mIoU'
    percent_keys = ('mIoU', 'maxF', 'maxF_beta0.3')

    def __init__(self, ignore_index: int = 255) -> None:
        self.ignore_index = ignore_index

    def image_stats(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        """Statistics of one image.

        Args:
            pred: Probabilities, shape (1, H, W) or (H, W).
            gt: {0, 1} map of the same spatial shape (255 = ignore).

        Returns:
            ``jaccard``, ``precision``, ``recall``: float64 arrays of shape
            (15,) (one value per threshold of :data:`IMAGE_THRESHOLDS`);
            ``tp`` and ``pp``: int64 arrays of shape (19,) (per threshold of
            :data:`POOLED_THRESHOLDS`); ``ap`` and ``n_valid``: ints.
        """
        pred = squeeze_channel(pred, self.task)
        gt = squeeze_channel(gt, self.task)
        if pred.dtype.kind != 'f':
            pred = pred.astype(np.float64)
        valid = gt != self.ignore_index
        positive = valid & (gt != 0)
        n_pos = int(positive.sum())
        (pp, tp), (pooled_pp, pooled_tp) = counts_above(pred, positive, valid,
                                                        (IMAGE_THRESHOLDS, POOLED_THRESHOLDS))
        tp, pp = tp.astype(np.float64), pp.astype(np.float64)
        union = pp + n_pos - tp
        jaccard = np.ones_like(tp)
        np.divide(tp, union, out=jaccard, where=union > 0)
        return dict(
            jaccard=jaccard,
            precision=tp / (pp + EPS),
            recall=tp / (n_pos + EPS),
            tp=pooled_tp,
            pp=pooled_pp,
            ap=n_pos,
            n_valid=int(valid.sum()))

    def reduce(self, stats: Sequence[Dict[str, Any]]) -> Dict[str, float]:
        """``mIoU``, ``maxF``, ``maxF_beta0.3`` (percent) and ``threshold``."""
        kept = [s for s in stats if s['n_valid'] > 0]
        if not kept:
            warn_empty(self.task)
            return {'mIoU': NAN, 'maxF': NAN, 'maxF_beta0.3': NAN, 'threshold': NAN}
        mean_j = np.mean([s['jaccard'] for s in kept], axis=0)
        mean_p = np.mean([s['precision'] for s in kept], axis=0)
        mean_r = np.mean([s['recall'] for s in kept], axis=0)
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
