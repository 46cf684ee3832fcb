"""Dropout that keeps a one-byte mask for the backward pass.

On CPU, ``torch.nn.functional.dropout`` draws a float Bernoulli tensor,
divides it by ``1 − p`` and multiplies: the saved mask costs four bytes per
element and ``bernoulli_`` is the slowest of the CPU random generators.
DiTASK's paper config drops the input of every adapted layer's frozen main
path, so on CPU that dropout took ~8 % of a Swin-T training step and saved a
float mask the size of every adapted layer's input (docs/benchmarks.md).

:class:`ByteMaskDropout` draws uniform 31-bit integers instead (about twice
as fast as ``bernoulli_`` on CPU), saves which ones fall below ``p·2³¹`` (the
dropped elements) as a ``bool`` mask, one byte per element, and scales the
kept values by ``1 / (1 − p)``. The
drop probability is ``round(p·2³¹) / 2³¹``, i.e. ``p`` to within 2⁻³², and
the expected output equals the input. It uses the default generator, so
``torch.manual_seed`` makes it reproducible. Other devices use
``F.dropout``: CUDA's fused kernel already keeps a one-byte mask.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

_RANDOM_BITS = 31  # int32 ``random_()`` draws from [0, 2³¹ − 1]


class _ByteMaskDropoutFunction(torch.autograd.Function):
    """``where(dropped, 0, x) / (1 − p)`` with the bool ``dropped`` mask saved for backward."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        threshold = round(p * 2**_RANDOM_BITS)
        dropped = torch.empty(x.shape, dtype=torch.int32, device=x.device).random_() < threshold
        ctx.save_for_backward(dropped)
        ctx.scale = 1.0 / (1.0 - p)
        return torch.where(dropped, 0.0, x).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (dropped,) = ctx.saved_tensors
        return torch.where(dropped, 0.0, grad).mul_(ctx.scale), None


def byte_mask_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Functional :class:`ByteMaskDropout`.

    Args:
        x: Any floating tensor.
        p: Drop probability in ``[0, 1)``.
        training: Without training (or with ``p == 0``) ``x`` is returned
            as is.

    Returns:
        A tensor like ``x``.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != 'cpu':
        return F.dropout(x, p, training=True)
    return _ByteMaskDropoutFunction.apply(x, p)


class ByteMaskDropout(nn.Module):
    """Drop-in ``nn.Dropout`` whose backward mask costs one byte per element.

    Args:
        p: Drop probability in ``[0, 1)``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f'dropout probability must be in [0, 1), got {p}')
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        """Drop elements of ``x`` (any shape) in training; identity in eval."""
        return byte_mask_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f'p={self.p}'
