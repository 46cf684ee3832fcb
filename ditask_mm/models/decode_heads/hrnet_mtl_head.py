"""One task's HRNet-style head over four feature scales.

As the public DiTASK/MTLoRA decoder (``docs/method.md`` §5): each input
scale is projected by a 1×1 convolution (no bias) to a narrow width (18, 36,
72, 144 by default: the public per-task "Downsampler"), the coarser three are
upsampled bilinearly to the finest scale and concatenated (270 channels),
then a 1×1 convolution to 1080 channels with BatchNorm and ReLU, and a 1×1
convolution to the task's channels. The result is resized bilinearly to the
requested output size (the input image size: ×8 for the public layout).

As in mmseg, the head owns its loss (``loss_decode``): :meth:`MTLHRNetHead.loss`
predicts and scores in one call and reports ``{loss_name: value}``, the
value already weighted by the loss's own ``loss_weight``.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from ...registry import MODELS


@MODELS.register_module()
class MTLHRNetHead(BaseModule):
    """HRNet-style head for one task.

    Args:
        in_channels: Channels of the backbone's four (or any number of)
            scales, finest first; the public Swin-T layout is
            ``(192, 384, 768, 768)``.
        out_channels: The task's output channels (semseg 21 on PASCAL, 40 on
            NYUD; human parts 7; saliency, edge and depth 1; normals 3).
        projection_channels: Width of each scale's 1×1 projection.
        hidden_channels: Width of the fusion convolution; defaults to
            4 × sum(projection_channels) (1080 for the public widths).
        norm_cfg: Normalisation after the fusion convolution (BatchNorm;
            use ``dict(type='SyncBN')`` for multi-GPU training).
        align_corners: For every bilinear resize.
        loss_decode: Config of the task's loss (e.g.
            ``dict(type='MTLCrossEntropyLoss', loss_weight=1.0)``), built
            into ``self.loss_decode``; ``None``: a prediction-only head whose
            :meth:`loss` raises.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: int,
                 projection_channels: Sequence[int] = (18, 36, 72, 144),
                 hidden_channels: Optional[int] = None,
                 norm_cfg: dict = dict(type='BN', momentum=0.1),
                 align_corners: bool = False,
                 loss_decode: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(in_channels) != len(projection_channels):
            raise ValueError(f'in_channels {list(in_channels)} and projection_channels '
                             f'{list(projection_channels)} must have one entry per scale')
        if out_channels < 1:
            raise ValueError(f'out_channels must be >= 1, got {out_channels}')
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels
        self.align_corners = align_corners
        fused = sum(projection_channels)
        hidden = hidden_channels or 4 * fused
        self.projections = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=False) for c_in, c_out in zip(in_channels, projection_channels))
        self.fuse = nn.Sequential(
            nn.Conv2d(fused, hidden, kernel_size=1), build_norm_layer(norm_cfg, hidden)[1], nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(hidden, out_channels, kernel_size=1)
        self.loss_decode = MODELS.build(loss_decode) if loss_decode is not None else None

    def forward(self, features: Sequence[Tensor], out_size: Optional[Tuple[int, int]] = None) -> Tensor:
        """Predict the task's map.

        Args:
            features: One ``(B, C_i, H_i, W_i)`` map per scale, finest first.
            out_size: ``(H, W)`` to resize the prediction to; ``None`` keeps
                the finest scale's size.

        Returns:
            ``(B, out_channels, H, W)`` logits (or raw regression values).
        """
        if len(features) != len(self.projections):
            raise ValueError(f'expected {len(self.projections)} feature maps, got {len(features)}')
        projected: List[Tensor] = []
        for i, (proj, feat) in enumerate(zip(self.projections, features)):
            if feat.shape[1] != self.in_channels[i]:
                raise ValueError(f'scale {i} has {feat.shape[1]} channels, expected {self.in_channels[i]}')
            projected.append(proj(feat))
        size = projected[0].shape[-2:]
        projected = [projected[0]] + [
            F.interpolate(p, size=size, mode='bilinear', align_corners=self.align_corners) for p in projected[1:]
        ]
        out = self.classifier(self.fuse(torch.cat(projected, dim=1)))
        if out_size is not None and tuple(out.shape[-2:]) != tuple(out_size):
            out = F.interpolate(out, size=out_size, mode='bilinear', align_corners=self.align_corners)
        return out

    def loss(self, features: Sequence[Tensor], target: Tensor,
             out_size: Optional[Tuple[int, int]] = None) -> Dict[str, Tensor]:
        """Predict from ``features`` and score the prediction against ``target``.

        Args:
            features: As :meth:`forward`.
            target: The task's target at ``out_size``: (B, H, W) labels or
                (B, C, H, W) maps, as ``loss_decode`` expects.
            out_size: As :meth:`forward`.

        Returns:
            ``{loss_decode.loss_name: value}``, the value a 0-dim tensor
            already multiplied by the loss's ``loss_weight``.
        """
        if self.loss_decode is None:
            raise RuntimeError(f'{type(self).__name__} was built without loss_decode, so it cannot compute a '
                               f'loss; pass loss_decode=dict(type=...) (the segmentor passes its loss_decode '
                               f'entry of the task)')
        pred = self(features, out_size=out_size)
        return {self.loss_decode.loss_name: self.loss_decode(pred, target)}
