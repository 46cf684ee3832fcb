"""Class-balanced binary cross-entropy for saliency and edges.

DiTASK's ``BalancedCrossEntropyLoss(size_average=True)`` (``docs/method.md``
§6): binary labels ``y = target >= threshold``, per-pixel BCE-with-logits ℓ,

    L = (w · Σ_{y=1} ℓ + (1 − w) · Σ_{y=0} ℓ) / N,

where N is the number of pixels of the batch and ``w`` is either fixed
(edges: 0.95) or N_neg / N over the whole batch (saliency). The original has
no ignore mask; here pixels equal to ``ignore_index`` are left out of every
sum and count, because padding (e.g. to a fixed crop size) fills label maps
with 255. Saliency ground truth never contains 255 itself, so unpadded
batches give exactly the original value.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ...registry import MODELS
from .base import MTLPixelLoss, match_channel_target


@MODELS.register_module()
class BalancedBCELoss(MTLPixelLoss):
    """Balanced BCE with logits, summed over pixels and divided by their number.

    ``pred`` holds logits of shape (B, 1, H, W); ``target`` has shape
    (B, 1, H, W) or (B, H, W), with values in [0, 1] (float, or uint8 0/1) or
    ``ignore_index``. Any other value raises ``ValueError``: a uint8 map of
    0..255 intensities must be divided by 255 first (its 255s would otherwise
    be ignored). The check synchronises with the device once per call.

    Args:
        pos_weight: Weight ``w`` of the positive pixels (negatives get
            ``1 − w``). ``None``: ``w = N_neg / N_valid`` over the whole
            batch, a constant with respect to ``pred``.
        threshold: A pixel is positive iff ``target >= threshold``.
        ignore_index: Target value of pixels excluded from the loss.
        loss_weight: Factor applied to the loss.
        loss_name: Name of the loss item.
    """

    def __init__(self, pos_weight: Optional[float] = None, threshold: float = 0.5,
                 ignore_index: int = 255, loss_weight: float = 1.0,
                 loss_name: str = 'loss_balanced_bce') -> None:
        super().__init__(loss_weight=loss_weight, loss_name=loss_name)
        if pos_weight is not None and not 0.0 <= pos_weight <= 1.0:
            raise ValueError(f'pos_weight must be in [0, 1] or None, got {pos_weight}')
        self.pos_weight = None if pos_weight is None else float(pos_weight)
        self.threshold = float(threshold)
        self.ignore_index = ignore_index

    def extra_repr(self) -> str:
        return (f'pos_weight={self.pos_weight}, threshold={self.threshold}, '
                f'ignore_index={self.ignore_index}, {super().extra_repr()}')

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        target = match_channel_target(self, pred, target)
        valid = target != self.ignore_index
        if bool((valid & ((target < 0) | (target > 1))).any()):
            raise ValueError(f'{type(self).__name__}: target values must be in [0, 1] or '
                             f'ignore_index={self.ignore_index}')
        positive = valid & (target >= self.threshold)
        negative = valid & ~positive
        labels = positive.to(pred.dtype)
        ell = F.binary_cross_entropy_with_logits(pred, labels, reduction='none')
        zero = ell.new_zeros(())
        sum_pos = torch.where(positive, ell, zero).sum()
        sum_neg = torch.where(negative, ell, zero).sum()
        n_valid = valid.sum().clamp(min=1).to(pred.dtype)
        if self.pos_weight is None:
            w = negative.sum().to(pred.dtype) / n_valid
        else:
            w = torch.as_tensor(self.pos_weight, dtype=pred.dtype, device=pred.device)
        return (w * sum_pos + (1 - w) * sum_neg) / n_valid
