"""Helpers shared by the per-task evaluators of :class:`MultiTaskMetric`.

Every task is scored by a small :class:`TaskEvaluator` with two steps:
``image_stats`` turns one image's prediction and ground truth into
*sufficient statistics* (a few numbers or small arrays, never pixel lists),
and ``reduce`` turns the statistics of the whole set into metrics. Keeping the
two apart is what lets mmengine gather per-image entries across ranks and
drop the padded duplicates of a distributed sampler before anything is
divided.
"""
import abc
import logging
import math
from typing import Any, Collection, Dict, List, Mapping, Sequence, Tuple

import numpy as np
from mmengine.logging import print_log
from mmengine.structures import BaseDataElement

NAN = float('nan')


def log(message: str, level: int = logging.INFO) -> None:
    """Log ``message`` through mmengine's current logger."""
    print_log(f'[MultiTaskMetric] {message}', logger='current', level=level)


def warn_empty(task: str, what: str = 'valid pixel') -> None:
    """Warn that ``task`` had no ``what`` in the whole set (its metrics are NaN)."""
    log(f'task {task!r}: no {what} in the evaluated set; its metrics are reported as NaN',
        logging.WARNING)


def ratio(num: float, den: float) -> float:
    """``num / den`` as a float, NaN when ``den`` is 0 (never ZeroDivisionError)."""
    return float(num) / float(den) if den else NAN


def to_numpy(data: Any) -> np.ndarray:
    """A tensor (any device), array or nested list as a NumPy array."""
    if hasattr(data, 'detach'):
        data = data.detach().cpu().numpy()
    return np.asarray(data)


def get_field(sample: Any, key: str) -> Any:
    """``sample[key]`` for a dict (``SegDataSample.to_dict()``) or a data sample.

    Returns ``None`` when the sample has no such field.
    """
    if isinstance(sample, Mapping):
        return sample.get(key)
    return getattr(sample, key, None)


def pixel_data(sample: Any, key: str) -> np.ndarray:
    """The ``data`` of the ``PixelData`` field ``key`` of ``sample``, as NumPy.

    Accepts the field as a dict (``{'data': tensor, ...}``), a ``PixelData``
    or a bare tensor/array.

    Raises:
        KeyError: If the sample has no field ``key``; the message names the
            sample's ``img_path``.
    """
    field = get_field(sample, key)
    if field is None:
        raise KeyError(f'{key!r} missing from the data sample of {sample_path(sample)}')
    if isinstance(field, Mapping):
        field = field['data']
    elif isinstance(field, BaseDataElement):
        field = field.data
    return to_numpy(field)


def sample_path(sample: Any) -> str:
    """A name for ``sample`` in error messages: its ``img_path`` if known."""
    path = get_field(sample, 'img_path')
    return repr(path) if path is not None else '<sample without img_path>'


def unpad_target(gt: np.ndarray, pred: np.ndarray, sample: Any) -> np.ndarray:
    """``gt`` without the padding the data preprocessor added, when the prediction is the unpadded image's.

    The preprocessor pads every target to the batch (``pad_shape``) in
    evaluation too, while the segmentor crops its predictions to the image
    (``img_shape``) before resizing them to ``ori_shape``. When the image is
    scored at its own size (``ori_shape == img_shape``, e.g.
    ``FixedResizeMTL(eval_at_resized=True)`` at a size that is not a multiple
    of ``size_divisor``), the target is cropped back to ``img_shape``; the
    cropped pixels are the pad value, ignored by every metric. Anything else
    is returned unchanged (and :func:`check_shapes` judges it).
    """
    img_shape, pad_shape = get_field(sample, 'img_shape'), get_field(sample, 'pad_shape')
    if img_shape is None or pad_shape is None:
        return gt
    height, width = (int(v) for v in img_shape[:2])
    if (tuple(gt.shape[-2:]) == tuple(int(v) for v in pad_shape[:2]) and tuple(pred.shape[-2:]) == (height, width)
            and tuple(gt.shape[-2:]) != (height, width)):
        return gt[..., :height, :width]
    return gt


def check_shapes(pred: np.ndarray, gt: np.ndarray, task: str, sample: Any) -> None:
    """Raise ``ValueError`` unless ``pred`` and ``gt`` have the same spatial shape.

    Args:
        pred: Prediction whose last two axes are (H, W).
        gt: Ground truth whose last two axes are (H, W).
        task: Task name, for the message.
        sample: The data sample, whose ``img_path`` goes into the message.
    """
    if pred.shape[-2:] != gt.shape[-2:]:
        raise ValueError(f'{task}: prediction shape {tuple(pred.shape)} does not match the ground truth '
                         f'shape {tuple(gt.shape)} for {sample_path(sample)} (predictions must be '
                         f'given at the ground-truth resolution; nothing is resized here)')


def squeeze_channel(array: np.ndarray, task: str) -> np.ndarray:
    """A single-channel map of shape (1, H, W) or (H, W) as (H, W)."""
    if array.ndim == 3 and array.shape[0] == 1:
        return array[0]
    if array.ndim == 2:
        return array
    raise ValueError(f'{task}: expected a (1, H, W) or (H, W) map, got shape {tuple(array.shape)}')


class TaskEvaluator(metaclass=abc.ABCMeta):
    """Base class of the per-task evaluators (plain helpers, not metrics).

    Attributes:
        task: Task name (a key of :data:`ditask_mm.tasks.TASKS`).
        delta_metric: Metric used by Δm by default.
        percent_keys: Metrics reported in percent (their Δm baselines may be
            given as fractions).
        lower_is_better: Metrics for which smaller values are better.
    """

    task: str = ''
    delta_metric: str = ''
    percent_keys: Tuple[str, ...] = ()
    lower_is_better: Tuple[str, ...] = ()

    @abc.abstractmethod
    def image_stats(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, Any]:
        """Sufficient statistics of one image (see the subclasses for shapes)."""
        raise NotImplementedError

    def batch_stats(self, pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> List[Dict[str, Any]]:
        """Statistics of the images of one evaluation batch, one dict per image, in order.

        :class:`MultiTaskMetric` calls this once per ``process`` call, i.e.
        once per batch. The default scores each image on its own; an
        evaluator whose reference depends on the batch composition overrides
        it.

        Args:
            pairs: ``(pred, gt)`` of each image of the batch.
        """
        return [self.image_stats(pred, gt) for pred, gt in pairs]

    @abc.abstractmethod
    def reduce(self, stats: Sequence[Dict[str, Any]]) -> Dict[str, float]:
        """Metrics of the set from the per-image statistics, keys without prefix."""
        raise NotImplementedError

    @classmethod
    def is_lower_better(cls, metric: str) -> bool:
        """Whether a smaller ``metric`` is better (Δm sign)."""
        return metric in cls.lower_is_better

    @classmethod
    def is_percent(cls, metric: str) -> bool:
        """Whether ``metric`` is reported in percent."""
        return metric in cls.percent_keys


def format_value(value: float) -> str:
    """A metric value for the summary table."""
    return 'nan' if isinstance(value, float) and math.isnan(value) else f'{value:.4g}'


def delta_m(values: Mapping[str, float], baselines: Mapping[str, float],
            lower_is_better: Collection[str] = ()) -> float:
    """Δm = 100/T · Σ (−1)^l (M − B)/B over the T keys of ``baselines``.

    Args:
        values: Metric value per key (any names), same units as the baselines.
        baselines: Baseline per key; every key must be in ``values``.
        lower_is_better: Keys with l = 1.

    Returns:
        Δm in percent (NaN if a value is NaN).
    """
    if not baselines:
        raise ValueError('delta_m needs at least one baseline')
    missing = [k for k in baselines if k not in values]
    if missing:
        raise KeyError(f'no result for the baseline(s) {missing}; results: {sorted(values)}')
    terms = [(-1.0 if k in lower_is_better else 1.0) * (values[k] - b) / b for k, b in baselines.items()]
    return 100.0 * sum(terms) / len(terms)
