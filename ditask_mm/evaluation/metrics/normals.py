"""Surface normals: angular error statistics (the V1 meter of the tables).

``docs/datasets.md`` M3. Over the valid pixels of **all**
images, with p the predicted unit vector (not renormalised: a zero vector
gives 90°) and g the ground truth (not renormalised either)::

    d = degrees(arccos(clamp(Σ_c p_c·g_c, −1, 1)))

Valid: channel 0 of the ground truth ≠ 255 (the V1 rule) and g not the zero
vector. The pipeline already turns zero vectors into 255, so the second test
only matters for ground truth that did not go through it (V1 would score such
a pixel as 90°; the offline MTI-Net evaluation ignores it, as here).

Reported (pooled pixel-wise over the set, not averaged per image):

* ``mean`` = Σd / N: the number DiTASK/MTLoRA tables call "rmse" (their V1
  meter aliases the mean) and ATRC-line papers call "mErr"; used by Δm;
* ``rmse`` = √(Σd² / N): the **true** RMSE of the ASTMT/MTI-Net offline
  evaluation, which is *not* the tables' "rmse";
* ``median``: from a histogram of d with :data:`BIN_WIDTH` = 0.05° bins over
  [0°, 180°] (3600 int32 bins per image), read at the bin centres of the
  middle order statistic(s), so it is within 0.025° of the exact median;
* ``11.25``, ``22.5``, ``30``: percentage of pixels with d strictly below.

NaN predictions propagate to NaN ``mean`` and ``rmse`` (as in the
reference); they are left out of the histogram and the thresholds.
"""
from typing import Any, Dict, Sequence

import numpy as np

from ._common import NAN, TaskEvaluator, ratio, warn_empty

#: Histogram resolution of the median, degrees.
BIN_WIDTH = 0.05
NUM_BINS = int(round(180 / BIN_WIDTH))
#: Accuracy thresholds, degrees (strict ``d < t``).
ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
_THRESHOLD_KEYS = ('11.25', '22.5', '30')


def angular_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """V1 angle in degrees between two (3, ...) arrays, shape (...); float64."""
    cos = sum(pred[c].astype(np.float64) * gt[c] for c in range(3))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def histogram_median(hist: np.ndarray, bin_width: float = BIN_WIDTH) -> float:
    """Median of the values binned in ``hist`` (shape (K,)), at bin centres.

    For an even count, the mean of the centres of the two middle values' bins.
    NaN for an empty histogram.
    """
    n = int(hist.sum())
    if n == 0:
        return NAN
    cum = np.cumsum(hist)
    ranks = [(n + 1) // 2] if n % 2 else [n // 2, n // 2 + 1]
    bins = [int(np.searchsorted(cum, r, side='left')) for r in ranks]
    return float(np.mean([(b + 0.5) * bin_width for b in bins]))


class NormalsEvaluator(TaskEvaluator):
    """Angle sums, counts and a histogram per image.

    Args:
        ignore_index: Ground-truth value marking invalid pixels (checked on
            channel 0); zero vectors are invalid too.
    """

    task = 'normals'
    delta_metric = 'mean'
    percent_keys = _THRESHOLD_KEYS
    lower_is_better = ('mean', 'median', 'rmse')

    def __init__(self, ignore_index: int = 255) -> None:
        self.ignore_index = ignore_index

    def image_stats(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        """Statistics of one image.

        Args:
            pred: Unit normals, shape (3, H, W).
            gt: Ground-truth normals, shape (3, H, W), ``ignore_index`` in
                (at least) channel 0 or a zero vector where invalid.

        Returns:
            ``sum``, ``sum_sq`` (floats, degrees and degrees²), ``count``
            (int), ``below`` (int64, shape (3,), counts under 11.25°, 22.5°,
            30°) and ``hist`` (int32, shape (3600,), 0.05° bins).
        """
        for name, array in (('prediction', pred), ('ground truth', gt)):
            if array.ndim != 3 or array.shape[0] != 3:
                raise ValueError(f'normals: {name} must have shape (3, H, W), got {tuple(array.shape)}')
        valid = (gt[0] != self.ignore_index) & (gt != 0).any(axis=0)
        d = angular_error(pred, gt)[valid]
        finite = d[np.isfinite(d)]
        bins = np.minimum((finite / BIN_WIDTH).astype(np.int64), NUM_BINS - 1)
        return dict(
            sum=float(d.sum()),
            sum_sq=float(np.square(d).sum()),
            count=int(d.size),
            below=np.array([(finite < t).sum() for t in ANGLE_THRESHOLDS], np.int64),
            hist=np.bincount(bins, minlength=NUM_BINS).astype(np.int32))

    def reduce(self, stats: Sequence[Dict[str, Any]]) -> Dict[str, float]:
        """``mean``, ``median``, ``rmse`` (degrees) and ``11.25``/``22.5``/``30`` (%)."""
        count = sum(s['count'] for s in stats)
        if count == 0:
            warn_empty(self.task)
            return dict(mean=NAN, median=NAN, rmse=NAN, **{k: NAN for k in _THRESHOLD_KEYS})
        total = sum(s['sum'] for s in stats)
        total_sq = sum(s['sum_sq'] for s in stats)
        below = np.sum([s['below'] for s in stats], axis=0)
        hist = np.sum([s['hist'] for s in stats], axis=0, dtype=np.int64)
        result = dict(mean=total / count, median=histogram_median(hist), rmse=float(np.sqrt(total_sq / count)))
        result.update({k: 100.0 * ratio(b, count) for k, b in zip(_THRESHOLD_KEYS, below)})
        return result
