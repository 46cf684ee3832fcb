"""Normalise and batch images together with every task's targets.

mmseg's ``SegDataPreProcessor`` pads only ``gt_sem_seg``, ``gt_edge_map`` and
``gt_depth_map``, all with one value, and pads no target at test time. The
multi-task version pads each task's target with that task's own value
(:mod:`ditask_mm.tasks`: labels and binary maps 255, normals 255, depth 0),
in training and in evaluation alike, so targets always line up with the
padded images.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor
from mmengine.structures import PixelData
from torch import Tensor

from ..registry import MODELS
from ..tasks import TASKS


@MODELS.register_module()
class MultiTaskDataPreProcessor(BaseDataPreprocessor):
    """Normalisation and padding of images and all targets.

    Args:
        mean: Per-channel mean, in the channel order after ``bgr_to_rgb``.
        std: Per-channel standard deviation.
        bgr_to_rgb: Whether to flip loaded BGR images to RGB.
        size: Pad every batch to this ``(H, W)``.
        size_divisor: Otherwise pad to the batch's largest size rounded up
            to a multiple of this (e.g. 32 for Swin).
        pad_val: Value for padded image pixels (after normalisation: 0).
        gt_pad_values: Override the pad value of some target keys, e.g.
            ``{'gt_depth': 255}``.
    """

    def __init__(self,
                 mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375),
                 bgr_to_rgb: bool = True,
                 size: Optional[Tuple[int, int]] = None,
                 size_divisor: Optional[int] = None,
                 pad_val: float = 0.0,
                 gt_pad_values: Optional[Dict[str, float]] = None) -> None:
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(-1, 1, 1), False)
        self.bgr_to_rgb = bgr_to_rgb
        self.size = tuple(size) if size is not None else None
        self.size_divisor = size_divisor
        self.pad_val = pad_val
        self.gt_pad_values = {spec.gt_key: spec.pad_value for spec in TASKS.values()}
        self.gt_pad_values.update(gt_pad_values or {})

    def padded_size(self, sizes: List[Tuple[int, int]]) -> Tuple[int, int]:
        """The batch's ``(H, W)`` after padding."""
        if self.size is not None:
            too_big = [s for s in sizes if s[0] > self.size[0] or s[1] > self.size[1]]
            if too_big:
                raise ValueError(f'images of size {too_big[0]} exceed the fixed pad size {self.size}')
            return self.size
        height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
        if self.size_divisor:
            height = math.ceil(height / self.size_divisor) * self.size_divisor
            width = math.ceil(width / self.size_divisor) * self.size_divisor
        return height, width

    def forward(self, data: dict, training: bool = False) -> Dict[str, object]:
        """Normalise, pad and stack.

        Args:
            data: ``inputs``, a list of ``(3, H_i, W_i)`` image tensors (any
                dtype), and optionally ``data_samples`` whose ``gt_*``
                fields are ``PixelData`` of matching ``H_i × W_i``.
            training: Unused: targets are padded in both modes.

        Returns:
            ``inputs``: ``(B, 3, H, W)`` float tensor; ``data_samples``: the
            samples with padded targets and ``img_shape``/``pad_shape``
            metainfo (the unpadded and padded sizes).
        """
        data = self.cast_data(data)
        images = data['inputs']
        samples = data.get('data_samples')
        if isinstance(images, Tensor):
            images = list(images)
        sizes = [tuple(img.shape[-2:]) for img in images]
        height, width = self.padded_size(sizes)
        batch = []
        for img in images:
            if img.dim() != 3 or img.shape[0] != self.mean.shape[0]:
                raise ValueError(f'expected images of shape ({self.mean.shape[0]}, H, W), got {tuple(img.shape)}')
            img = img.float()
            if self.bgr_to_rgb:
                img = img.flip(0)
            img = (img - self.mean) / self.std
            batch.append(F.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2]), value=self.pad_val))
        inputs = torch.stack(batch)
        if samples is not None:
            for sample, size in zip(samples, sizes):
                sample.set_metainfo(dict(img_shape=size, pad_shape=(height, width),
                                         batch_input_shape=(height, width)))
                self._pad_targets(sample, height, width)
        return dict(inputs=inputs, data_samples=samples)

    def _pad_targets(self, sample, height: int, width: int) -> None:
        for key, value in self.gt_pad_values.items():
            if key not in sample:
                continue
            target = sample.get(key).data
            if target.dim() == 2:
                target = target.unsqueeze(0)
            pad = (0, width - target.shape[-1], 0, height - target.shape[-2])
            if pad[1] < 0 or pad[3] < 0:
                raise ValueError(f'{key} of size {tuple(target.shape[-2:])} is larger than the padded batch '
                                 f'({height}, {width})')
            padded = F.pad(target.float() if target.dtype == torch.bool else target, pad, value=value)
            sample.set_field(PixelData(data=padded), key)
