"""mIoU of label maps: semantic segmentation and human parts.

``docs/datasets.md`` M1. Per class c, over the valid pixels
(ground truth ≠ 255) of **all** images::

    I_c = #(gt = c ∧ pred = c),  P_c = #(pred = c),  G_c = #(gt = c)
    IoU_c = I_c / (P_c + G_c − I_c)        (TP / (TP + FP + FN))

Predictions outside [0, C) are in no ``P_c``, so such pixels only add a
false negative to their ground-truth class. Ground-truth values outside
[0, C) other than 255 (a data error, logged once) are in no ``G_c`` and count
as false positives of the predicted class, as in the reference.

Two conventions for the mean (``miou_convention``):

* ``'reference'`` (DiTASK/MTLoRA/MTI-Net): mean over **all** C classes; a
  class absent from both ground truth and prediction has IoU 0 and counts.
* ``'nanmean'`` (mmseg ``IoUMetric``): classes with zero union are left out
  of the mean (and their per-class IoU is NaN).

IoUs are reported in **percent** (×100), as mmseg does; the reference meters
return fractions and the papers' tables print ×100.
"""
import logging
from typing import Any, Dict, Optional, Sequence

import numpy as np

from ._common import NAN, TaskEvaluator, log, squeeze_channel, warn_empty

MIOU_CONVENTIONS = ('reference', 'nanmean')


class LabelMapEvaluator(TaskEvaluator):
    """Per-class intersection and areas of label maps, reduced to mIoU.

    Args:
        task: ``'semseg'`` or ``'human_parts'``.
        num_classes: Number of classes C (21 for PASCAL semseg, 40 for NYUD,
            7 for human parts).
        ignore_index: Ground-truth value of ignored pixels.
        miou_convention: ``'reference'`` or ``'nanmean'`` (module docstring).
        class_names: Names used in per-class keys (``IoU.<name>``); indices
            when ``None``.
    """

    delta_metric = 'mIoU'
    percent_keys = ('mIoU', )

    def __init__(self, task: str, num_classes: int, ignore_index: int = 255,
                 miou_convention: str = 'reference',
                 class_names: Optional[Sequence[str]] = None) -> None:
        if miou_convention not in MIOU_CONVENTIONS:
            raise ValueError(f'miou_convention must be one of {MIOU_CONVENTIONS}, got {miou_convention!r}')
        if int(num_classes) < 1:
            raise ValueError(f'{task}: num_classes must be >= 1, got {num_classes}')
        self.task = task
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.miou_convention = miou_convention
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f'{task}: {len(class_names)} class names for {self.num_classes} classes')
        self.class_names = [str(c) for c in (class_names or range(self.num_classes))]
        self._warned_out_of_range = False

    @classmethod
    def is_percent(cls, metric: str) -> bool:
        """``mIoU`` and the per-class ``IoU.<class>`` are in percent."""
        return metric == 'mIoU' or metric.startswith('IoU.')

    def image_stats(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        """Counts of one image.

        Args:
            pred: Predicted labels, shape (1, H, W) or (H, W), any integer or
                integral float dtype.
            gt: Ground-truth labels of the same spatial shape, integer or
                float, with ``ignore_index`` for ignored pixels.

        Returns:
            ``intersect``, ``pred_area`` and ``gt_area``: int64 arrays of
            shape (C,), counted over the valid pixels only; ``n_valid``: the
            number of valid pixels (int).
        """
        pred = squeeze_channel(pred, self.task)
        gt = squeeze_channel(gt, self.task)
        valid = gt != self.ignore_index
        g = gt[valid].astype(np.int64)
        p = pred[valid].astype(np.int64)
        c = self.num_classes
        g_in = (g >= 0) & (g < c)
        p_in = (p >= 0) & (p < c)
        if not self._warned_out_of_range and not g_in.all():
            self._warned_out_of_range = True
            log(f'task {self.task!r}: ground-truth labels outside [0, {c}) and not {self.ignore_index} '
                f'(e.g. {int(g[~g_in][0])}); they count as false positives of the predicted class',
                logging.WARNING)
        return dict(
            intersect=np.bincount(p[p_in & (p == g)], minlength=c)[:c].astype(np.int64),
            pred_area=np.bincount(p[p_in], minlength=c)[:c].astype(np.int64),
            gt_area=np.bincount(g[g_in], minlength=c)[:c].astype(np.int64),
            n_valid=int(g.size))

    def reduce(self, stats: Sequence[Dict[str, Any]]) -> Dict[str, float]:
        """``mIoU`` and ``IoU.<class>`` (percent) from the summed counts.

        NaN (with a warning) when the set has no valid pixel at all.
        """
        c = self.num_classes
        intersect = np.zeros(c, np.int64)
        union = np.zeros(c, np.int64)
        n_valid = 0
        for s in stats:
            intersect += s['intersect']
            union += s['pred_area'] + s['gt_area'] - s['intersect']
            n_valid += int(s['n_valid'])
        per_class = self.per_class_iou(intersect, union)
        if n_valid == 0:
            warn_empty(self.task)
            miou = NAN
        elif self.miou_convention == 'reference':
            miou = float(np.mean(per_class))
        else:
            present = union > 0
            miou = float(np.mean(per_class[present])) if present.any() else NAN
        result = {'mIoU': miou}
        result.update({f'IoU.{name}': float(v) for name, v in zip(self.class_names, per_class)})
        return result

    def per_class_iou(self, intersect: np.ndarray, union: np.ndarray) -> np.ndarray:
        """IoU per class in percent, shape (C,): 0 (reference) or NaN (nanmean) where union is 0."""
        iou = np.zeros(len(union), np.float64)
        np.divide(intersect, union, out=iou, where=union > 0)
        if self.miou_convention == 'nanmean':
            iou[union == 0] = np.nan
        return 100.0 * iou
