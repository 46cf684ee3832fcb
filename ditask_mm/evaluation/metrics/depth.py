"""Depth (NYUD): RMSE and log-RMSE, pooled pixel-wise over the set.

``docs/datasets.md`` M4. Valid pixels: ground truth ≠ 255 and
> 0 (0 marks missing depth and padding). The prediction is clamped to
≥ 1e-9 (so a prediction ≤ 0 keeps ``log_rmse`` finite)::

    rmse     = √( Σ_valid (g − p)² / N )
    log_rmse = √( Σ_valid (ln g − ln p)² / N )

with N the number of valid pixels of **all** images (not a mean of per-image
RMSEs, which is what ASTMT did). Units: metres.
"""
from typing import Any, Dict, Sequence

import numpy as np

from ._common import NAN, TaskEvaluator, squeeze_channel, warn_empty

#: Lower bound of the prediction.
MIN_DEPTH = 1e-9


class DepthEvaluator(TaskEvaluator):
    """Squared-error sums and counts per image.

    Args:
        ignore_index: Ground-truth value of invalid pixels (besides ≤ 0).
    """

    task = 'depth'
    delta_metric = 'rmse'
    lower_is_better = ('rmse', 'log_rmse')

    def __init__(self, ignore_index: int = 255) -> None:
        self.ignore_index = ignore_index

    def image_stats(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        """Statistics of one image.

        Args:
            pred: Depth in metres, shape (1, H, W) or (H, W).
            gt: Depth in metres of the same spatial shape; 0 and 255 invalid.

        Returns:
            ``sum_sq`` and ``sum_sq_log`` (floats) and ``count`` (int).
        """
        pred = squeeze_channel(pred, self.task).astype(np.float64)
        gt = squeeze_channel(gt, self.task).astype(np.float64)
        valid = (gt != self.ignore_index) & (gt > 0)
        g = gt[valid]
        p = np.maximum(pred[valid], MIN_DEPTH)
        return dict(sum_sq=float(np.square(g - p).sum()),
                    sum_sq_log=float(np.square(np.log(g) - np.log(p)).sum()),
                    count=int(g.size))

    def reduce(self, stats: Sequence[Dict[str, Any]]) -> Dict[str, float]:
        """``rmse`` and ``log_rmse`` of the set."""
        count = sum(s['count'] for s in stats)
        if count == 0:
            warn_empty(self.task)
            return dict(rmse=NAN, log_rmse=NAN)
        return dict(rmse=float(np.sqrt(sum(s['sum_sq'] for s in stats) / count)),
                    log_rmse=float(np.sqrt(sum(s['sum_sq_log'] for s in stats) / count)))
