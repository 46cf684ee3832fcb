"""Compare finished runs side by side: every metric, Δm, trainable parameters, training time.

A *run* is what ``tools/train.py`` and ``tools/test.py`` leave behind: either a
``metrics.json`` file (written by ``tools/test.py``) or a directory holding one
(``RUN/metrics.json`` or ``RUN/test/metrics.json``). Where the run directory
also holds the training work dir (``RUN/train``, or ``RUN`` itself), the
comparison adds the trainable-parameter counts of the config dumped there
(:func:`ditask_mm.analysis.count_parameters`, the model is built without reading
any weights) and the training time: the span between the first and the last
line of the newest training log (model building, training, validation and
checkpointing; a resumed run counts its last session only). What a run lacks is
shown as ``-``.
"""
import datetime
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ..fileio import atomic_write_text

PathLike = Union[str, os.PathLike]
#: Metric listed first (the multi-task score); the others follow sorted by name.
DELTA_M_KEY = 'delta_m'
#: :func:`~ditask_mm.analysis.count_parameters` groups shown in the table.
PARAMETER_ROWS = (('backbone_trainable', 'trainable params: backbone'), ('decode_heads', 'trainable params: heads'),
                  ('total_trainable', 'trainable params: total'))
TIME_ROW = 'training time (s)'
MISSING = '-'
_LOG_TIME = re.compile(r'^(\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) - ')


class RunComparisonError(ValueError):
    """A run's files are missing or not what ``tools/test.py`` writes."""


@dataclass
class RunSummary:
    """What the comparison knows of one run."""
    name: str
    metrics_path: str
    metrics: Dict[str, float]
    config: Optional[str] = None
    trainable_parameters: Dict[str, Any] = field(default_factory=dict)
    train_seconds: Optional[float] = None


def find_metrics_file(run: PathLike) -> Path:
    """``run`` itself if it is a file, else ``run/metrics.json`` or ``run/test/metrics.json``."""
    run = Path(run)
    if run.is_file():
        return run
    for candidate in (run / 'metrics.json', run / 'test' / 'metrics.json'):
        if candidate.is_file():
            return candidate
    raise RunComparisonError(f'{run}: no metrics.json (looked for {run}/metrics.json and {run}/test/metrics.json); '
                             'run tools/test.py CONFIG CHECKPOINT --work-dir DIR first, then pass DIR or the file')


def read_metrics(path: PathLike) -> Dict[str, float]:
    """The ``{name: number}`` object of a ``metrics.json`` file."""
    try:
        metrics = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunComparisonError(f'{path}: cannot read a JSON object ({err}); expected the metrics.json that '
                                 'tools/test.py writes') from err
    if not isinstance(metrics, dict):
        raise RunComparisonError(f'{path}: expected a JSON object of metric names to numbers, got '
                                 f'{type(metrics).__name__}')
    bad = [k for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        raise RunComparisonError(f'{path}: metrics {bad[:5]} are not numbers; expected {{"name": number, ...}}')
    return {k: float(v) for k, v in metrics.items()}


def find_train_dir(run: PathLike) -> Optional[Path]:
    """The training work dir of a run directory (``run/train`` or ``run``), or ``None``."""
    run = Path(run)
    if run.is_file():
        run = run.parent.parent if run.parent.name == 'test' else run.parent
    for candidate in (run / 'train', run):
        if candidate.is_dir() and (any(candidate.glob('*/*.log')) and any(candidate.glob('*.py'))):
            return candidate
    return None


def training_seconds(train_dir: PathLike) -> Optional[float]:
    """Seconds between the first and last timestamped line of the newest ``TIMESTAMP/TIMESTAMP.log``."""
    logs = sorted(Path(train_dir).glob('*/*.log'))
    if not logs:
        return None
    stamps = [m.group(1) for m in map(_LOG_TIME.match, logs[-1].read_text(errors='replace').splitlines()) if m]
    if len(stamps) < 2:
        return None
    first, last = (datetime.datetime.strptime(s, '%Y/%m/%d %H:%M:%S') for s in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def dumped_config(train_dir: PathLike) -> Optional[Path]:
    """The newest config file mmengine dumped into the training work dir."""
    configs = sorted(Path(train_dir).glob('*.py'), key=lambda p: p.stat().st_mtime)
    return configs[-1] if configs else None


def config_trainable_parameters(config: PathLike) -> Dict[str, Any]:
    """:func:`~ditask_mm.analysis.count_parameters` of the config's model, built without reading weights."""
    from ..apis import init_model
    from .parameters import count_parameters
    return count_parameters(init_model(str(config), init_weights=False))


def summarize_run(run: PathLike, name: str, count_parameters: bool = True) -> RunSummary:
    """Read one run's metrics and, where its training work dir is found, parameters and time."""
    metrics_path = find_metrics_file(run)
    summary = RunSummary(name=name, metrics_path=str(metrics_path), metrics=read_metrics(metrics_path))
    train_dir = find_train_dir(run)
    if train_dir is not None:
        summary.train_seconds = training_seconds(train_dir)
        config = dumped_config(train_dir)
        summary.config = str(config) if config else None
        if config is not None and count_parameters:
            summary.trainable_parameters = config_trainable_parameters(config)
    return summary


def _format(value: Optional[float], kind: str) -> str:
    if value is None:
        return MISSING
    if kind == 'count':
        return f'{int(value):,}'
    return f'{value:.1f}' if kind == 'time' else f'{value:.3f}'


def comparison_rows(runs: Sequence[RunSummary]) -> List[List[str]]:
    """Table rows ``[label, value per run..., difference first − second]`` as strings.

    Every metric of any run (Δm first), the trainable-parameter groups and the
    training time; ``-`` where a run lacks the value, and in the difference
    column unless exactly two runs both have it.
    """
    keys = sorted({k for run in runs for k in run.metrics}, key=lambda k: (k != DELTA_M_KEY, k))
    entries = [(f'Δm ({k})' if k == DELTA_M_KEY else k, [run.metrics.get(k) for run in runs], 'metric')
               for k in keys]
    entries += [(label, [run.trainable_parameters.get(k) for run in runs], 'count') for k, label in PARAMETER_ROWS]
    entries.append((TIME_ROW, [run.train_seconds for run in runs], 'time'))
    rows = []
    for label, values, kind in entries:
        diff = values[0] - values[1] if len(values) == 2 and None not in values else None
        rows.append([label, *(_format(v, kind) for v in values), _format(diff, kind)])
    return rows


def comparison_markdown(runs: Sequence[RunSummary]) -> str:
    """The comparison as a Markdown table (aligned, so it also reads as plain text)."""
    header = ['metric', *(run.name for run in runs), f'{runs[0].name} − {runs[1].name}' if len(runs) == 2 else 'Δ']
    rows = [header, *comparison_rows(runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        return '| ' + ' | '.join(cells) + ' |'
    rule = '|' + '|'.join('-' * (w + 2) for w in widths) + '|'
    return '\n'.join([line(header), rule, *(line(row) for row in rows[1:])]) + '\n'


def compare_runs(runs: Sequence[PathLike], names: Optional[Sequence[str]] = None,
                 out_dir: Optional[PathLike] = None, count_parameters: bool = True) -> Dict:
    """Summarize runs, and write ``comparison.json`` and ``comparison.md`` into ``out_dir``.

    Args:
        runs: Run directories or ``metrics.json`` files (see the module docstring).
        names: One column name per run; the run paths' names when ``None``.
        out_dir: Where the two files go; nothing is written when ``None``.
        count_parameters: Build each run's config to count its trainable parameters.

    Returns:
        ``{'runs': [RunSummary as dicts], 'rows': [[label, values..., diff]], 'markdown': str}``.

    Raises:
        RunComparisonError: (a ``ValueError``) On fewer than two runs, a name
            count that differs from the run count, or a missing or malformed
            ``metrics.json``.
    """
    if len(runs) < 2:
        raise RunComparisonError(f'need at least two runs to compare, got {len(runs)}')
    names = list(names) if names else [Path(run).name for run in runs]
    if len(names) != len(runs):
        raise RunComparisonError(f'got {len(names)} names {names} for {len(runs)} runs; give one name per run')
    summaries = [summarize_run(run, name, count_parameters) for run, name in zip(runs, names)]
    result = dict(runs=[asdict(s) for s in summaries], rows=comparison_rows(summaries),
                  markdown=comparison_markdown(summaries))
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        atomic_write_text(json.dumps({k: result[k] for k in ('runs', 'rows')}, indent=2, ensure_ascii=False),
                          Path(out_dir) / 'comparison.json')
        atomic_write_text(result['markdown'], Path(out_dir) / 'comparison.md')
    return result
