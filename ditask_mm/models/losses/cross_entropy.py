"""Pixel-wise softmax cross-entropy for semseg and human parts, and the base
class shared by all multi-task losses.

DiTASK trains semseg and human parts with LogSoftmax + NLL, ignore label 255,
averaged over the valid pixels of the whole batch (shared/docs/method.md §4).
Unlike the original, a batch without any valid pixel (e.g. human parts of a
batch with no person, all 255) gives exactly 0 instead of NaN.
"""
import abc
import contextlib
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...registry import MODELS

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class MTLPixelLoss(nn.Module, metaclass=abc.ABCMeta):
    """Base class: loss weight, mmseg-style name, fp32 computation.

    ``forward`` disables autocast for the device of ``pred`` and casts fp16 /
    bf16 predictions to fp32 (fp32 and fp64 are kept as they are, so fp64
    gradient checks stay exact); subclasses implement :meth:`compute` on the
    cast inputs and get ``loss_weight`` applied to what it returns.

    Args:
        loss_weight: Factor applied to the loss.
        loss_name: Name of the loss item; must start with ``loss_`` to be
            back-propagated by mmengine's ``parse_losses``.
    """

    def __init__(self, loss_weight: float = 1.0, loss_name: str = 'loss') -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        """Name of the loss item (the key in the dict of losses)."""
        return self._loss_name

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, loss_name={self._loss_name!r}'

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Weighted loss as a 0-dim tensor (fp32 for fp16/bf16/fp32 ``pred``)."""
        if pred.dim() != 4:
            raise ValueError(f'{type(self).__name__}: expected pred of shape (B, C, H, W), '
                             f'got {tuple(pred.shape)}')
        with _no_autocast(pred.device):
            if pred.dtype in _LOW_PRECISION:
                pred = pred.float()
            loss = self.compute(pred, target)
        return self.loss_weight * loss

    @abc.abstractmethod
    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        """Unweighted loss; ``pred`` is already in the computation dtype."""
        raise NotImplementedError

    def _shape_error(self, pred: Tensor, target: Tensor, expected: str) -> ValueError:
        return ValueError(f'{type(self).__name__}: for pred of shape {tuple(pred.shape)} expected '
                          f'target of shape {expected}, got {tuple(target.shape)}')


@contextlib.contextmanager
def _no_autocast(device: torch.device) -> Iterator[None]:
    """Autocast off for ``device``'s type (a no-op where there is none)."""
    try:
        ctx = torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # device type without autocast support
        ctx = contextlib.nullcontext()
    with ctx:
        yield


def match_channel_target(loss: MTLPixelLoss, pred: Tensor, target: Tensor) -> Tensor:
    """Return ``target`` shaped like ``pred``, adding a channel axis if needed.

    ``pred`` is (B, C, H, W); ``target`` may be the same shape or, when
    C == 1, (B, H, W).
    """
    matched = target.unsqueeze(1) if target.dim() == 3 and pred.shape[1] == 1 else target
    if matched.shape != pred.shape:
        alt = f' or {(pred.shape[0], ) + tuple(pred.shape[2:])}' if pred.shape[1] == 1 else ''
        raise loss._shape_error(pred, target, f'{tuple(pred.shape)}{alt}')
    return matched


def masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over ``valid``; exactly 0, still attached, if none is.

    ``torch.where`` (not multiplication) keeps inf/NaN at invalid positions
    out of the value; the gradient reaching them is zero.
    """
    total = torch.where(valid, values, values.new_zeros(())).sum()
    return total / valid.sum().clamp(min=1).to(values.dtype)


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
