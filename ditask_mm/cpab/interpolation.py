"""Linear resampling of 1-D signals with difw's ``interpolate`` convention.

A signal ``y`` of length ``W`` is read as the piecewise-linear function on
[0, 1] whose sample ``y[i]`` sits at ``i / (W - 1)``. Sampling it at a grid
position ``g`` uses the index-space position ``p = g (W - 1)`` and::

    i0 = clamp(floor(p), 0, W-1),  i1 = clamp(floor(p) + 1, 0, W-1),
    xi = p - i0,                    out = y[i0] + (y[i1] - y[i0]) xi

Outside ``[0, W-1]`` both indices coincide, so the result is the end value
(constant extrapolation, zero gradient). Inside, the gradient with respect to
``p`` is the right-sided slope ``y[i1] - y[i0]``, and 0 at ``p = W-1``.
Writing the blend as ``y0 + (y1 - y0) xi`` (not ``y0 (1 - xi) + y1 xi``)
keeps the clamped end values exact.
"""
from typing import Tuple

import torch
from torch import Tensor

__all__ = ['resample_at_indices', 'resample_at_grid']


def _broadcast_rows(values: Tensor, positions: Tensor) -> Tuple[Tensor, Tensor]:
    rows_v, rows_p = values.shape[0], positions.shape[0]
    if rows_v != rows_p and 1 not in (rows_v, rows_p):
        raise ValueError(f'batch sizes of values ({rows_v}) and positions ({rows_p}) do not match')
    rows = max(rows_v, rows_p)
    return values.expand(rows, -1), positions.expand(rows, -1)


def resample_at_indices(values: Tensor, positions: Tensor) -> Tensor:
    """Sample signals at fractional index positions (difw convention).

    Args:
        values: Signals, shape ``(B, W)`` (``B`` may be 1 to share one signal).
        positions: Index-space positions ``p``, shape ``(B, M)`` (``B`` may be
            1 to share the positions). Same floating dtype as ``values``.

    Returns:
        The resampled signals, shape ``(B, M)``. Differentiable with respect to
        ``values`` and ``positions``; constant outside ``[0, W-1]``.
    """
    if values.dim() != 2 or positions.dim() != 2:
        raise ValueError('values and positions must be 2-D (B, W) and (B, M), '
                         f'got {tuple(values.shape)} and {tuple(positions.shape)}')
    width = values.shape[1]
    if width < 1:
        raise ValueError('cannot resample an empty signal')
    values, positions = _broadcast_rows(values, positions)
    last = width - 1
    with torch.no_grad():
        finite = torch.nan_to_num(positions.detach(), nan=0.0, posinf=last, neginf=0.0)
        floor = torch.floor(finite).clamp(-1, width)
        i0 = floor.clamp(0, last)
        i1 = (floor + 1).clamp(0, last).long()
    # Outside [0, W-1] the indices coincide and xi is irrelevant; pin it to 0
    # so huge or infinite positions cannot produce inf * 0 (NaN propagates).
    outside = (positions < 0) | (positions > last)
    xi = torch.where(outside, i0, positions) - i0
    i0 = i0.long()
    y0 = values.gather(1, i0)
    y1 = values.gather(1, i1)
    return y0 + (y1 - y0) * xi


def resample_at_grid(values: Tensor, grid: Tensor) -> Tensor:
    """Sample signals at positions on [0, 1]: ``p = grid (W - 1)``.

    Args:
        values: Signals on ``linspace(0, 1, W)``, shape ``(B, W)``.
        grid: Sampling positions in domain units, shape ``(B, M)``.

    Returns:
        The resampled signals, shape ``(B, M)``.
    """
    return resample_at_indices(values, grid * (values.shape[-1] - 1))
