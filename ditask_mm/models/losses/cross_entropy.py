"""Pixel-wise softmax cross-entropy for semseg and human parts.

DiTASK trains semseg and human parts with LogSoftmax + NLL, ignore label 255,
averaged over the valid pixels of the whole batch (``docs/method.md`` §6).
Unlike the original, a batch without any valid pixel (e.g. human parts of a
batch with no person, all 255) gives exactly 0 instead of NaN.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from ...registry import MODELS
from .base import MTLPixelLoss, masked_mean


@MODELS.register_module()
class MTLCrossEntropyLoss(MTLPixelLoss):
    """Softmax cross-entropy averaged over the non-ignored pixels of the batch.

    ``pred`` holds logits of shape (B, C, H, W); ``target`` holds integer
    labels (any integer or integral float dtype) of shape (B, H, W) or
    (B, 1, H, W). Pixels equal to ``ignore_index`` are excluded; any other
    label outside [0, C) or a non-integral value raises ``ValueError`` (this
    check synchronises with the device once per call).

    Args:
        ignore_index: Label excluded from the loss and from the pixel count.
        loss_weight: Factor applied to the loss.
        loss_name: Name of the loss item.
    """

    def __init__(self, ignore_index: int = 255, loss_weight: float = 1.0,
                 loss_name: str = 'loss_ce') -> None:
        super().__init__(loss_weight=loss_weight, loss_name=loss_name)
        self.ignore_index = int(ignore_index)

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        if target.dim() == 4 and target.shape[1] == 1:
            target = target[:, 0]
        expected = (pred.shape[0], ) + tuple(pred.shape[2:])
        if tuple(target.shape) != expected:
            raise self._shape_error(pred, target, f'{expected} or {(pred.shape[0], 1) + expected[1:]}')
        valid = target != self.ignore_index
        bad = valid & ((target < 0) | (target >= pred.shape[1]))
        if target.is_floating_point():
            bad |= valid & (target != torch.floor(target))
        if bool(bad.any()):
            found = torch.unique(target[bad]).tolist()[:10]
            raise ValueError(f'{type(self).__name__}: labels must be integers in [0, {pred.shape[1]}) '
                             f'or ignore_index={self.ignore_index}; found {found}')
        labels = torch.where(valid, target, torch.zeros_like(target)).long()
        nll = -F.log_softmax(pred, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
        return masked_mean(nll, valid)
