"""Helpers of the evaluation tests: data samples as the model and pipeline
produce them, and a capture of mmengine's log."""
import logging
from typing import Dict, List, Sequence

import numpy as np
import torch
from mmengine.logging import MMLogger
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from ditask_mm.tasks import TASKS


def make_sample(img_path: str = 'img.png', as_dict: bool = True, **arrays) -> object:
    """A data sample with ``pred_<task>``/``gt_<task>`` fields.

    Keyword arguments are ``<task>_pred`` and ``<task>_gt`` arrays (e.g.
    ``semseg_pred=...``), stored under the task's prediction/gt keys as
    ``PixelData``. Returns ``SegDataSample.to_dict()`` (what mmengine gives
    ``process``) or the sample itself.
    """
    sample = SegDataSample(metainfo=dict(img_path=img_path))
    for name, array in arrays.items():
        task, role = name.rsplit('_', 1)
        key = TASKS[task].pred_key if role == 'pred' else TASKS[task].gt_key
        sample.set_field(PixelData(data=torch.as_tensor(np.asarray(array))), key)
    return sample.to_dict() if as_dict else sample


def run_metric(metric, samples: Sequence[object], batch_size: int = 2) -> Dict[str, float]:
    """Feed ``samples`` to ``metric.process`` in batches and compute the metrics."""
    metric.results.clear()
    for start in range(0, len(samples), batch_size):
        metric.process({}, list(samples[start:start + batch_size]))
    return metric.compute_metrics(list(metric.results))


class LogCapture:
    """Collects the messages of mmengine's current logger within a ``with``."""

    def __init__(self) -> None:
        self.records: List[logging.LogRecord] = []
        self._handler = logging.Handler()
        self._handler.emit = self.records.append  # type: ignore[assignment]

    def __enter__(self) -> 'LogCapture':
        MMLogger.get_current_instance().addHandler(self._handler)
        return self

    def __exit__(self, *exc) -> None:
        MMLogger.get_current_instance().removeHandler(self._handler)

    def messages(self, level: int = logging.DEBUG) -> List[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]
