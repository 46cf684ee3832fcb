"""``tools/test.py --edge-png-dir``: every edge prediction as the 8-bit PNG that SEISM users score.

:class:`EdgePNGWriter` is a metric that computes nothing: appended to a
run's test evaluators, it writes one single-channel 8-bit PNG per image,
``<out_dir>/<image id>.png``, holding
:func:`~ditask_mm.evaluation.metrics.edge_ods.edge_png_values` of the
predicted edge probabilities, i.e. floor(255·p) as the reference writes
them. The PNG has the size of the prediction, which is the size at which
``MultiTaskMetric`` scored it (the sample's ``ori_shape``; the paper configs
score at 448×448, see ``docs/datasets.md`` M0). Since the online metric
turns probabilities into the same ``uint8`` values before matching,
``tools/analysis_tools/eval_edges.py`` on the folder (with ``--gt-size`` for
a config that scores at a fixed size) reproduces the run's ``edge.odsF``,
``edge.oisF`` and ``edge.AP`` exactly.

Each file is written atomically (:func:`ditask_mm.fileio.atomic_write_bytes`),
so a killed run leaves complete PNGs only. Under DDP every rank writes the
images it predicted; the padded duplicates of a distributed sampler rewrite
the same bytes.
"""
import io
import os
import os.path as osp
from typing import Any, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from PIL import Image

from ..fileio import atomic_write_bytes
from ..registry import METRICS
from ..tasks import TASKS
from .metrics._common import get_field, pixel_data, sample_path, squeeze_channel
from .metrics.edge_ods import edge_png_values

__all__ = ['EdgePNGWriter', 'edge_png_bytes', 'sample_image_id']


def edge_png_bytes(png_values: np.ndarray) -> bytes:
    """The encoded single-channel 8-bit PNG of a ``uint8`` map of shape (H, W)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(png_values, dtype=np.uint8), mode='L').save(buffer, format='PNG')
    return buffer.getvalue()


def sample_image_id(sample: Any) -> str:
    """The image id of a data sample: its ``img_id``, else the stem of its ``img_path``.

    Raises:
        KeyError: If the sample has neither (the PNG could not be named).
    """
    img_id = get_field(sample, 'img_id')
    if img_id is None:
        img_path = get_field(sample, 'img_path')
        if img_path is None:
            raise KeyError('EdgePNGWriter: a data sample has neither img_id nor img_path, so its edge PNG cannot '
                           'be named; keep img_id in PackMultiTaskInputs(meta_keys=...)')
        img_id = osp.splitext(osp.basename(img_path))[0]
    img_id = str(img_id)
    if not img_id or img_id in ('.', '..') or '/' in img_id or os.sep in img_id:
        raise ValueError(f'EdgePNGWriter: image id {img_id!r} of {sample_path(sample)} is not a file name')
    return img_id


@METRICS.register_module()
class EdgePNGWriter(BaseMetric):
    """Write each image's edge prediction as ``<out_dir>/<image id>.png`` (see the module docstring).

    Args:
        out_dir: Folder of the PNGs (created if needed).
        collect_device: See ``BaseMetric``.
        collect_dir: See ``BaseMetric``.
    """

    default_prefix = 'edge_png'

    def __init__(self, out_dir: str, collect_device: str = 'cpu', collect_dir: str = None) -> None:
        super().__init__(collect_device=collect_device, collect_dir=collect_dir)
        if not out_dir:
            raise ValueError('EdgePNGWriter: out_dir must name a folder for the edge PNGs')
        self.out_dir = os.fspath(out_dir)

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Write the PNG of every sample of the batch; remember its id.

        Raises:
            KeyError: If a sample has no edge prediction (the run does not
                predict the ``edge`` task); the message names the sample.
        """
        pred_key = TASKS['edge'].pred_key
        for sample in data_samples:
            if get_field(sample, pred_key) is None:
                raise KeyError(f'EdgePNGWriter: no {pred_key!r} in the data sample of {sample_path(sample)}; '
                               f"edge PNGs need a model that predicts the 'edge' task (tasks=[..., 'edge'])")
            values = edge_png_values(squeeze_channel(pixel_data(sample, pred_key), 'edge'))
            img_id = sample_image_id(sample)
            atomic_write_bytes(edge_png_bytes(values), osp.join(self.out_dir, f'{img_id}.png'))
            self.results.append(img_id)

    def compute_metrics(self, results: list) -> dict:
        """Log where the PNGs are; no metric."""
        print_log(f'edge PNGs of {len(set(results))} images written to {self.out_dir}', logger='current')
        return {}
