"""Edges: a balanced-BCE **proxy**, not the odsF of the papers.

``docs/datasets.md`` M5. The edge metric of the papers is odsF, which
:mod:`~ditask_mm.evaluation.metrics.edge_ods` computes (and reports this
proxy alongside); ``MultiTaskMetric(edge_ods=False)`` scores edges with this
proxy alone. Like the reference's online ``EdgeMeter``, this reports a
class-balanced binary cross-entropy *loss* on the probabilities p: p is fed
as the logit x of a BCE-with-logits (as the reference does with pred/255),
labels y = (gt ≥ 0.5), positives weighted w = 0.95 and negatives 1 − w::

    bce_proxy = Σ_valid [w·y·softplus(−p) + (1 − w)·(1 − y)·softplus(p)] / N

over the valid pixels (gt ≠ 255) of all images. Lower is better. It tracks
training progress only and must not be compared with published edge numbers.
"""
from typing import Any, Dict, Sequence

import numpy as np

from ._common import NAN, TaskEvaluator, squeeze_channel, warn_empty

#: Weight of the positive pixels, as the reference ``EdgeMeter``.
POS_WEIGHT = 0.95


class EdgeProxyEvaluator(TaskEvaluator):
    """Balanced-BCE sums and counts per image.

    Args:
        pos_weight: Weight of the edge pixels (non-edge pixels get 1 − w).
        ignore_index: Ground-truth value of ignored (padding) pixels.
    """

    task = 'edge'
    delta_metric = 'bce_proxy'
    lower_is_better = ('bce_proxy', )

    def __init__(self, pos_weight: float = POS_WEIGHT, ignore_index: int = 255) -> None:
        self.pos_weight = float(pos_weight)
        self.ignore_index = ignore_index

    def image_stats(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        """Statistics of one image.

        Args:
            pred: Edge probabilities, shape (1, H, W) or (H, W).
            gt: {0, 1} edge map of the same spatial shape (255 = ignore).

        Returns:
            ``sum`` (float, weighted BCE summed over valid pixels) and
            ``count`` (int).
        """
        pred = squeeze_channel(pred, self.task).astype(np.float64)
        gt = squeeze_channel(gt, self.task)
        valid = gt != self.ignore_index
        x = pred[valid]
        y = gt[valid] >= 0.5
        # softplus(-x) for y = 1, softplus(x) for y = 0, numerically stable
        loss = np.logaddexp(0.0, np.where(y, -x, x))
        weights = np.where(y, self.pos_weight, 1.0 - self.pos_weight)
        return dict(sum=float((weights * loss).sum()), count=int(x.size))

    def reduce(self, stats: Sequence[Dict[str, Any]]) -> Dict[str, float]:
        """``bce_proxy`` of the set (NaN with a warning when empty)."""
        count = sum(s['count'] for s in stats)
        if count == 0:
            warn_empty(self.task)
            return dict(bce_proxy=NAN)
        return dict(bce_proxy=sum(s['sum'] for s in stats) / count)
