"""Write a prediction panel per test image (``tools/test.py --show-dir``)."""
import os
import os.path as osp
from typing import Optional, Sequence

import cv2
import numpy as np
from mmengine.hooks import Hook

from ..registry import HOOKS
from ..tasks import TASKS


@HOOKS.register_module()
class MultiTaskVisualizationHook(Hook):
    """Save ``input | task predictions`` (and a ground-truth row) as PNG panels.

    Args:
        out_dir: Where the panels go (created if needed).
        interval: Draw every ``interval``-th test batch.
        max_images: Stop after this many panels (``None``: all).
        with_gt: Add the ground-truth row when the samples carry targets.
    """

    priority = 'LOW'

    def __init__(self, out_dir: str, interval: int = 1, max_images: Optional[int] = None,
                 with_gt: bool = True) -> None:
        self.out_dir = out_dir
        self.interval = interval
        self.max_images = max_images
        self.with_gt = with_gt
        self.written = 0

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs: Optional[Sequence] = None) -> None:
        if batch_idx % self.interval or not outputs:
            return
        from ..visualization.panel import save_panel
        from ..visualization.task_maps import render_task_map
        os.makedirs(self.out_dir, exist_ok=True)
        for sample in outputs:
            if self.max_images is not None and self.written >= self.max_images:
                return
            preds, gts = {}, {}
            for task, spec in TASKS.items():
                if spec.pred_key in sample:
                    preds[task] = render_task_map(task, sample.get(spec.pred_key).data.cpu().numpy())
                    if self.with_gt and spec.gt_key in sample:
                        gts[task] = render_task_map(task, sample.get(spec.gt_key).data.cpu().numpy())
            if not preds:
                continue
            height, width = next(iter(preds.values())).shape[:2]
            path = sample.metainfo.get('img_path')
            image = cv2.imread(path) if path and osp.isfile(path) else None
            image = np.zeros((height, width, 3), np.uint8) if image is None else cv2.cvtColor(
                cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            stem = osp.splitext(osp.basename(path or f'sample_{self.written}'))[0]
            save_panel(osp.join(self.out_dir, f'{stem}_panel.png'), image, preds, gts or None)
            self.written += 1
