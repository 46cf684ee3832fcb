"""A picture of task affinity: one heat map of the task-by-task cosines per backbone stage."""
import io
from typing import Any, Mapping, Sequence

from torch import Tensor

from ..fileio import atomic_write_bytes


def plot_affinity(matrices: Mapping[int, Tensor], tasks: Sequence[str], parameters: Mapping[int, Mapping[str, Any]],
                  path: str, title: str = 'gradient affinity') -> None:
    """Heat maps of per-stage ``T × T`` affinity matrices, one panel per stage, written atomically as a PNG.

    The colour scale is diverging and fixed to [−1, 1]; every cell shows its
    value; each panel's title gives the stage and the parameters measured
    (``parameters[stage]``: ``num_parameters`` and ``parameters``, as in
    :class:`~ditask_mm.analysis.task_affinity.AffinityResult`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    stages = sorted(matrices)
    size = 1.0 + 0.7 * len(tasks)  # room for each panel's task names below
    fig = Figure(figsize=((size + 1.3) * len(stages) + 1.2, size + 1.2), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(stages), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        matrix = matrices[stage].numpy()
        image = ax.imshow(matrix, cmap='RdBu_r', vmin=-1.0, vmax=1.0)
        ticks = range(len(tasks))
        ax.set_xticks(ticks, tasks, rotation=45, ha='right', fontsize=8)
        ax.set_yticks(ticks, tasks, fontsize=8)
        for r in ticks:
            for c in ticks:
                ax.text(c, r, f'{matrix[r, c]:.2f}', ha='center', va='center', fontsize=7,
                        color='white' if abs(matrix[r, c]) > 0.6 else 'black')
        info = parameters[stage]
        ax.set_title(f"stage {stage}\n{info['num_parameters']:,} parameters ({info['parameters']})", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label='E[cos(g_t, g_t\')]')
    fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100, bbox_inches='tight')
    atomic_write_bytes(buffer.getvalue(), path)
