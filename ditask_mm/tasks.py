"""The dense-prediction tasks ditask_mm knows, and how each is stored.

One table, used by the data preprocessor, the packer, the segmentor, the
metrics and the visualisers, so that a task's ground-truth key, prediction
key, pad value and output channels are defined once.

==============  ==================  ===================  =====  ==========  ============
task            ground truth        prediction           pad    kind        predicted as
==============  ==================  ===================  =====  ==========  ============
semseg          ``gt_sem_seg``      ``pred_sem_seg``     255    labels      argmax
human_parts     ``gt_human_parts``  ``pred_human_parts`` 255    labels      argmax
sal             ``gt_saliency``     ``pred_saliency``    255    binary      sigmoid (probability)
edge            ``gt_edge``         ``pred_edge``        255    binary      sigmoid (probability)
normals         ``gt_normals``      ``pred_normals``     255    vectors     L2-normalised
depth           ``gt_depth``        ``pred_depth``       0      scalar      raw (metres)
==============  ==================  ===================  =====  ==========  ============

Ignore conventions: labels and binary maps use 255 for "ignore"; normals use
255 in all three channels; depth uses 0 (and 255) for "invalid".
"""
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple


@dataclass(frozen=True)
class TaskSpec:
    """How one task's targets and predictions are stored.

    Attributes:
        name: Task name used in configs (``'semseg'``...).
        gt_key: Field of the data sample holding the target ``PixelData``.
        pred_key: Field of the data sample holding the prediction.
        kind: ``'labels'``, ``'binary'``, ``'vectors'`` or ``'scalar'``.
        pad_value: Value used to pad targets (and ignored by losses/metrics).
        channels: Target channels (1 for labels, binary and scalar maps).
    """

    name: str
    gt_key: str
    pred_key: str
    kind: str
    pad_value: float
    channels: int = 1

    @property
    def is_label_map(self) -> bool:
        return self.kind == 'labels'


TASKS: Dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec('semseg', 'gt_sem_seg', 'pred_sem_seg', 'labels', 255),
        TaskSpec('human_parts', 'gt_human_parts', 'pred_human_parts', 'labels', 255),
        TaskSpec('sal', 'gt_saliency', 'pred_saliency', 'binary', 255),
        TaskSpec('edge', 'gt_edge', 'pred_edge', 'binary', 255),
        TaskSpec('normals', 'gt_normals', 'pred_normals', 'vectors', 255, channels=3),
        TaskSpec('depth', 'gt_depth', 'pred_depth', 'scalar', 0),
    )
}


def task_spec(task: str) -> TaskSpec:
    """The :class:`TaskSpec` of ``task``; a clear ``KeyError`` otherwise."""
    try:
        return TASKS[task]
    except KeyError:
        raise KeyError(f'unknown task {task!r}; known tasks: {sorted(TASKS)}') from None


def check_tasks(tasks: Iterable[str], where: Optional[str] = None) -> Tuple[str, ...]:
    """Validate a task list: known, distinct, non-empty. Returns it as a tuple."""
    tasks = tuple(tasks)
    context = f' in {where}' if where else ''
    if not tasks:
        raise ValueError(f'no tasks given{context}')
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise KeyError(f'unknown task(s) {unknown}{context}; known tasks: {sorted(TASKS)}')
    if len(set(tasks)) != len(tasks):
        raise ValueError(f'duplicate tasks {list(tasks)}{context}')
    return tasks
