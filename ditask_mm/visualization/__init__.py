"""Pictures of multi-task predictions: per-task RGB maps and side-by-side panels.

* :mod:`.task_maps`: one task's prediction or target as an RGB ``uint8``
  image (palettes for label maps, colormaps for saliency and depth, RGB
  normals, grey edges), :func:`render_task_map` choosing by task kind;
* :mod:`.panel`: the input image and one tile per task, optionally with a
  ground-truth row, written atomically as PNG;
* :mod:`.affinity_plot`: per-stage heat maps of the gradient affinity between
  tasks (``tools/analysis_tools/task_affinity.py``).
"""
from .affinity_plot import plot_affinity
from .panel import make_panel, save_panel, write_png
from .task_maps import (HUMAN_PARTS_PALETTE, NYUD_PALETTE, VOC_PALETTE, colorize_depth, colorize_labels,
                        colorize_normals, colorize_probability, label_palette, render_task_map, voc_palette)

__all__ = [
    'HUMAN_PARTS_PALETTE', 'NYUD_PALETTE', 'VOC_PALETTE', 'colorize_depth', 'colorize_labels', 'colorize_normals',
    'colorize_probability', 'label_palette', 'make_panel', 'plot_affinity', 'render_task_map', 'save_panel',
    'voc_palette', 'write_png'
]
