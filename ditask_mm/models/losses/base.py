"""The base class of every multi-task pixel loss, and the helpers the losses share.

A loss owns its weight (``loss_weight``, applied once, here) and its name
(``loss_name``, the key under which the decode head reports it); the
segmentor only prefixes the task (``semseg.loss_ce``).
"""
import abc

import torch
import torch.nn as nn
from torch import Tensor

from ...precision import LOW_PRECISION, autocast_disabled


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
        with autocast_disabled(pred.device):
            if pred.dtype in LOW_PRECISION:
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
