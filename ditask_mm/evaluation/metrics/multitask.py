"""The metric users configure: every task of a multi-task model, and Δm.

``process`` appends **one entry per image** to ``self.results`` (a dict of
per-task sufficient statistics, see the evaluators), so that mmengine's
``collect_results`` can gather ranks and truncate to the dataset size, which
drops the padded duplicates of a distributed sampler. ``compute_metrics``
sums the statistics of the whole set before dividing.

Δm (``docs/datasets.md`` M6), over the T tasks with a baseline::

    Δm = 100 / T · Σ_i (−1)^{l_i} · (M_i − B_i) / B_i

with l_i = 1 for lower-is-better metrics (normals ``mean``, depth ``rmse``)
and 0 otherwise (``mIoU``, edge ``odsF``...). Results are in percent for
IoU-like metrics and F-measures; baselines of such metrics may be fractions
(``baseline_units``).
"""
import logging
import math
from typing import Any, Dict, Mapping, Optional, Sequence

from mmengine.evaluator import BaseMetric
from prettytable import PrettyTable

from ...registry import METRICS
from ...tasks import TASKS, check_tasks, task_spec
from ._common import TaskEvaluator, check_shapes, delta_m, format_value, log, pixel_data, unpad_target
from .depth import DepthEvaluator
from .edge import EdgeProxyEvaluator
from .edge_ods import PASCAL_MAX_DIST, EdgeODSEvaluator
from .normals import NormalsEvaluator
from .saliency import SaliencyEvaluator
from .segmentation import MIOU_CONVENTIONS, LabelMapEvaluator

#: Default number of classes when neither ``num_classes`` nor the dataset says.
DEFAULT_NUM_CLASSES = dict(human_parts=7)
#: ``dataset_meta`` key holding a label task's class names.
CLASS_NAME_KEYS = dict(semseg='classes', human_parts='parts_classes')
BASELINE_UNITS = ('auto', 'percent', 'fraction')
EVALUATORS = dict(semseg=LabelMapEvaluator, human_parts=LabelMapEvaluator, sal=SaliencyEvaluator,
                  edge=EdgeODSEvaluator, normals=NormalsEvaluator, depth=DepthEvaluator)


@METRICS.register_module()
class MultiTaskMetric(BaseMetric):
    """Metrics of every task of a multi-task model, with optional Δm.

    Result keys are ``<task>.<metric>``: ``semseg.mIoU``, ``human_parts.mIoU``
    (and ``<task>.IoU.<class>`` with ``per_class=True``), ``sal.mIoU``,
    ``sal.maxF``, ``sal.maxF_beta0.3``, ``sal.threshold``, ``normals.mean``,
    ``normals.median``, ``normals.rmse``, ``normals.11.25``,
    ``normals.22.5``, ``normals.30``, ``depth.rmse``, ``depth.log_rmse``,
    ``edge.odsF``, ``edge.oisF``, ``edge.AP`` (BSDS/SEISM protocol, see
    :mod:`~ditask_mm.evaluation.metrics.edge_ods`), ``edge.bce_proxy`` (the
    training-curve proxy, reported alongside; alone with ``edge_ods=False``),
    and ``delta_m`` when baselines are given. IoU-like values, F-measures and
    the normals accuracies are in percent. A task without any valid pixel
    reports NaN (with a warning).

    Args:
        tasks: Tasks to evaluate (names of :data:`ditask_mm.tasks.TASKS`).
        baselines: Single-task baselines for Δm: ``{task: value}`` (the
            task's default metric: ``mIoU``, normals ``mean``, depth
            ``rmse``, edge ``odsF``) or ``{task: dict(metric=...,
            value=..., lower_is_better=...)}`` (the last key optional).
            ``None``: no Δm. Baselines of known tasks that are not
            evaluated are ignored, so a dataset config can hold the
            baselines of all its tasks (``configs/_base_/datasets/*.py``,
            their only copy) and a run evaluate some of them; an unknown task
            name raises ``KeyError``. Evaluated tasks without a baseline are
            left out of Δm (with a logged note); with none left, there is no
            Δm. A task's baseline given as ``None`` removes it (e.g.
            ``baselines=dict(edge=None)`` in a config over a dataset base).
        miou_convention: ``'reference'`` (mean over all C classes, absent
            classes count as 0) or ``'nanmean'`` (mmseg: zero-union classes
            skipped).
        num_classes: ``{task: C}`` for label tasks. Defaults: semseg from the
            length of ``dataset_meta['classes']``, human_parts from
            ``dataset_meta['parts_classes']`` or 7.
        baseline_units: Units of the baselines of percent metrics:
            ``'percent'``, ``'fraction'`` (multiplied by 100) or ``'auto'``
            (values ≤ 1 are fractions).
        per_class: Also return ``<task>.IoU.<class>`` keys.
        sal_beta_double_sigmoid: Reproduce a known bug of the public
            DiTASK/MTLoRA code, for comparison with its logged "Beta maxF"
            only; off by default. Its β² = 0.3 saliency meter applies a
            sigmoid to ``pred / 255``, which is already a probability. With
            the option ``sal.maxF_beta0.3`` thresholds sigmoid(p) instead of
            p, with p rounded to float32 and the sigmoid evaluated by PyTorch
            in float32 as there: the scores lie in [0.5, 0.731], thresholds
            ≤ 0.5 mark every pixel positive and thresholds ≥ 0.75 none
            (F = 0). Requires ``'sal'`` in ``tasks``.
        sal_batch_of_one_rows: Reproduce a known bug of the public code's
            per-image saliency meter (``sal.mIoU``, ``sal.maxF``,
            ``sal.threshold``), off by default: a batch holding one image is
            squeezed to [H, W] there and scored row by row, adding H
            row-level J/P/R entries to the means instead of one image-level
            entry. With the option, every ``process`` call with a single
            data sample is taken as such a batch (mmengine calls ``process``
            once per evaluation batch; ``Evaluator.offline_evaluate`` with
            its default ``chunk_size=1`` makes every image one), and its
            image adds one entry per row holding a valid pixel. Exact for
            single-process evaluation. Under DDP each rank's own batches of
            one are scored so, as in the public code (whose ranks each see
            their padded shard), but the means then run over the entries of
            all ranks with the sampler's padded duplicates dropped, whereas
            the public code scores each rank's shard separately, without
            reduction and duplicates included. The pooled
            ``sal.maxF_beta0.3`` is unaffected (the public code handles
            B = 1 there). Requires ``'sal'`` in ``tasks``.
        edge_ods: Score edges with odsF/oisF/AP (needs ``pyedgeeval``; a
            task list with ``'edge'`` raises an ``ImportError`` here, at
            construction, when it is missing, and one without never imports
            it). ``False``: the BCE proxy only, seconds faster per image,
            for training curves; an edge baseline must then name
            ``metric='bce_proxy'`` (or be ``None``).
        edge_max_dist: Edge matching tolerance, a fraction of the image
            diagonal: 0.0075 for PASCAL-Context, 0.011 for NYUD-v2.
        edge_nms: Apply the edge NMS before thresholding (the InvPT-family
            protocol; off in the reference, see ``edge_ods``'s module).
        edge_num_workers: Worker processes that score the edge maps of each
            evaluation batch (0: in the evaluating process).
        collect_device: See ``BaseMetric``.
        prefix: See ``BaseMetric``; none by default (metric keys are
            ``'{task}.{metric}'`` and ``'delta_m'``, which ``save_best`` names).
        collect_dir: See ``BaseMetric``.
    """

    #: No prefix (an empty one, which mmengine does not warn about, unlike ``None``).
    default_prefix: Optional[str] = ''

    def __init__(self, tasks: Sequence[str], baselines: Optional[Mapping[str, Any]] = None,
                 miou_convention: str = 'reference', num_classes: Optional[Mapping[str, int]] = None,
                 baseline_units: str = 'auto', per_class: bool = False, sal_beta_double_sigmoid: bool = False,
                 sal_batch_of_one_rows: bool = False, edge_ods: bool = True,
                 edge_max_dist: float = PASCAL_MAX_DIST, edge_nms: bool = False, edge_num_workers: int = 0,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None, collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.tasks = check_tasks(tasks, where='MultiTaskMetric')
        if miou_convention not in MIOU_CONVENTIONS:
            raise ValueError(f'miou_convention must be one of {MIOU_CONVENTIONS}, got {miou_convention!r}')
        if baseline_units not in BASELINE_UNITS:
            raise ValueError(f'baseline_units must be one of {BASELINE_UNITS}, got {baseline_units!r}')
        self.miou_convention = miou_convention
        self.baseline_units = baseline_units
        self.per_class = per_class
        self.num_classes = dict(num_classes or {})
        for task in self.num_classes:
            if task_spec(task).kind != 'labels':
                raise ValueError(f'num_classes given for {task!r}, which is not a label task')
        self.baselines = self._parse_baselines(baselines)
        self.sal_beta_double_sigmoid = bool(sal_beta_double_sigmoid)
        self.sal_batch_of_one_rows = bool(sal_batch_of_one_rows)
        self._check_reference_bug_options()
        self.edge_ods = bool(edge_ods)
        self.edge_options = dict(max_dist=edge_max_dist, nms=edge_nms, num_workers=edge_num_workers)
        self._check_edge_options()
        self._evaluators: Optional[Dict[str, TaskEvaluator]] = None

    # ------------------------------------------------------------ set-up
    @property
    def dataset_meta(self) -> Optional[dict]:
        """Meta information of the dataset (class names)."""
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict) -> None:
        BaseMetric.dataset_meta.fset(self, dataset_meta)
        self._evaluators = None  # class counts and names may change

    def _parse_baselines(self, baselines: Optional[Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
        if baselines is None:
            return {}
        if not isinstance(baselines, Mapping):
            raise ValueError(f'baselines must be a dict {{task: value}} or None, got {baselines!r}; the PASCAL and '
                             f'NYUD numbers are in configs/_base_/datasets/pascal_mtl.py and nyud_mtl.py '
                             f'(val_evaluator.baselines)')
        unknown = sorted(set(baselines) - set(TASKS))
        if unknown:
            raise KeyError(f'baselines given for unknown task(s) {unknown}; known tasks: {sorted(TASKS)}')
        parsed = {}
        for task, spec in baselines.items():
            if task not in self.tasks or spec is None:
                continue  # a baseline of another task of the dataset (or removed): not part of this run's Δm
            spec = dict(spec) if isinstance(spec, Mapping) else dict(value=spec)
            unknown = set(spec) - {'metric', 'value', 'lower_is_better'}
            if 'value' not in spec or unknown:
                raise ValueError(f'baseline of {task!r} must be a number or dict(metric=..., value=..., '
                                 f'[lower_is_better=...]), got {baselines[task]!r}')
            value = float(spec['value'])
            if value == 0 or not math.isfinite(value):
                raise ValueError(f'baseline of {task!r} must be finite and non-zero, got {value}')
            parsed[task] = dict(spec, value=value)
        return parsed

    def _check_reference_bug_options(self) -> None:
        """Reject saliency options without the sal task; warn when one is on."""
        options = ('sal_beta_double_sigmoid', 'sal_batch_of_one_rows')
        enabled = [name for name in options if getattr(self, name)]
        if not enabled:
            return
        if 'sal' not in self.tasks:
            raise ValueError(f"{enabled} given, but 'sal' is not evaluated; "
                             f'evaluated tasks: {list(self.tasks)}')
        log(f'{enabled}: reproducing known bugs of the public code\'s saliency meters; these sal numbers '
            f'are for comparison with published ones, not the correct metric', logging.WARNING)

    def _check_edge_options(self) -> None:
        """Fail at construction, not after an epoch: pyEdgeEval missing, bad options, a baseline not computed."""
        if 'edge' not in self.tasks:
            return
        if not self.edge_ods:
            spec = self.baselines.get('edge')
            if spec is not None and spec.get('metric') != 'bce_proxy':
                raise ValueError(f"edge_ods=False computes edge.bce_proxy only, but the edge baseline is for "
                                 f"edge.{spec.get('metric', EdgeODSEvaluator.delta_metric)} ({spec['value']}); "
                                 f"set edge_ods=True, or give baselines=dict(edge=None) (edge left out of delta_m) "
                                 f"or dict(edge=dict(metric='bce_proxy', value=...))")
            return
        EdgeODSEvaluator(**self.edge_options)  # imports pyEdgeEval (ImportError: how to install), validates options

    def _class_info(self, task: str) -> tuple:
        names = (self.dataset_meta or {}).get(CLASS_NAME_KEYS[task])
        count = self.num_classes.get(task)
        if count is None:
            count = len(names) if names else DEFAULT_NUM_CLASSES.get(task)
        if count is None:
            raise ValueError(f"{task}: number of classes unknown; pass num_classes=dict({task}=C) or use a "
                             f"dataset whose metainfo has '{CLASS_NAME_KEYS[task]}'")
        if names is not None and len(names) != count:
            log(f'{task}: {len(names)} class names in dataset_meta for {count} classes; using indices',
                logging.WARNING)
            names = None
        return count, names

    def evaluators(self) -> Dict[str, TaskEvaluator]:
        """One evaluator per task, built on first use (after ``dataset_meta`` is set)."""
        if self._evaluators is None:
            built: Dict[str, TaskEvaluator] = {}
            for task in self.tasks:
                kind = TASKS[task].kind
                if kind == 'labels':
                    count, names = self._class_info(task)
                    built[task] = LabelMapEvaluator(task, count, miou_convention=self.miou_convention,
                                                    class_names=names)
                elif task == 'sal':
                    built[task] = SaliencyEvaluator(beta_double_sigmoid=self.sal_beta_double_sigmoid,
                                                    batch_of_one_rows=self.sal_batch_of_one_rows)
                elif task == 'edge':
                    built[task] = EdgeODSEvaluator(**self.edge_options) if self.edge_ods else EdgeProxyEvaluator()
                else:
                    built[task] = EVALUATORS[task]()
            self._evaluators = built
        return self._evaluators

    # ------------------------------------------------------------ metric API
    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Append one entry ``{task: statistics}`` per sample to ``self.results``.

        mmengine calls this once per evaluation batch; ``data_samples`` is
        the batch (each evaluator gets the batch's images together, see
        ``sal_batch_of_one_rows``).

        Args:
            data_batch: Unused.
            data_samples: ``SegDataSample.to_dict()`` dicts (or data samples)
                holding, per task, the prediction and the ground truth at the
                same resolution.

        Raises:
            ValueError: If a prediction's spatial shape differs from its
                ground truth's (the message names the sample's ``img_path``).
            KeyError: If a sample lacks a task's prediction or ground truth.
        """
        entries: list = [{} for _ in data_samples]
        for task, evaluator in self.evaluators().items():
            spec = TASKS[task]
            pairs = []
            for sample in data_samples:
                pred = pixel_data(sample, spec.pred_key)
                gt = unpad_target(pixel_data(sample, spec.gt_key), pred, sample)
                check_shapes(pred, gt, task, sample)
                pairs.append((pred, gt))
            for entry, stats in zip(entries, evaluator.batch_stats(pairs)):
                entry[task] = stats
        self.results.extend(entries)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Reduce the per-image entries of the whole set to flat ``<task>.<metric>`` keys."""
        full: Dict[str, float] = {}
        for task, evaluator in self.evaluators().items():
            for key, value in evaluator.reduce([r[task] for r in results]).items():
                full[f'{task}.{key}'] = value
        metrics = {k: v for k, v in full.items() if self.per_class or '.IoU.' not in k}
        if self.baselines:
            metrics['delta_m'] = self.compute_delta_m(full)
        self._log_summary(metrics)
        return metrics

    def compute_delta_m(self, metrics: Mapping[str, float]) -> float:
        """Δm of ``metrics`` (flat ``<task>.<metric>`` keys) against the baselines.

        Baselines of percent metrics are converted per ``baseline_units``;
        tasks without a baseline are left out (with a logged note).
        """
        values, baselines, lower = {}, {}, set()
        for task, spec in self.baselines.items():
            evaluator = EdgeProxyEvaluator if task == 'edge' and not self.edge_ods else EVALUATORS[task]
            key = f"{task}.{spec.get('metric', evaluator.delta_metric)}"
            if key not in metrics:
                raise KeyError(f'baseline metric {key!r} of task {task!r} is not computed; '
                               f'computed: {sorted(k for k in metrics if k.startswith(task + "."))}')
            metric = key[len(task) + 1:]
            value = spec['value']
            as_fraction = self.baseline_units == 'fraction' or (self.baseline_units == 'auto' and abs(value) <= 1.0)
            if evaluator.is_percent(metric) and as_fraction:
                value *= 100.0
            values[key], baselines[key] = metrics[key], value
            if spec.get('lower_is_better', evaluator.is_lower_better(metric)):
                lower.add(key)
        skipped = [t for t in self.tasks if t not in self.baselines]
        if skipped:
            log(f'tasks without a baseline, left out of delta_m: {skipped}')
        if 'edge.bce_proxy' in baselines:
            log('delta_m includes edge.bce_proxy, a loss proxy, not odsF: not comparable to papers',
                logging.WARNING)
        return delta_m(values, baselines, lower)

    def _log_summary(self, metrics: Mapping[str, float]) -> None:
        """Log one row per task (and a per-class IoU table with ``per_class``)."""
        table = PrettyTable(field_names=['task', 'results'], align='l')
        class_tables = []
        for task in self.tasks:
            row = {k[len(task) + 1:]: v for k, v in metrics.items() if k.startswith(task + '.')}
            table.add_row([task, '  '.join(f'{k}={format_value(v)}' for k, v in row.items()
                                           if not k.startswith('IoU.'))])
            per_class = {k[4:]: v for k, v in row.items() if k.startswith('IoU.')}
            if per_class:
                class_table = PrettyTable(title=f'{task} IoU per class')
                class_table.add_column('Class', list(per_class))
                class_table.add_column('IoU', [format_value(v) for v in per_class.values()])
                class_tables.append(class_table.get_string())
        if 'delta_m' in metrics:
            table.add_row(['delta_m', f"{format_value(metrics['delta_m'])} %"])
        log('results:\n' + '\n'.join(class_tables + [table.get_string()]))
