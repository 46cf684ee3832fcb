"""Closed-form integration of a 1-D continuous piecewise-affine velocity field.

The field on [0, 1] has ``nc`` equal cells; in cell ``c`` it is
``v(x) = a_c x + b_c``, and the end cells' affine fields extend to -inf/+inf.
The flow ``phi(x) = x(T)`` of ``dx/dt = v(x)``, ``x(0) = x`` is computed
exactly by walking from cell to cell (``docs/method.md`` §3.3):

* inside a cell, after time ``t``: ``psi = x + t v(x) E(t a)`` with
  ``E(z) = expm1(z) / z``;
* the time to reach the boundary ``x_c`` the point moves towards is
  ``t_hit = (dx / v) L(a dx / v)`` with ``dx = x_c - x`` and
  ``L(z) = log1p(z) / z`` (equivalently ``log(v(x_c) / v(x)) / a``); there is
  no hit if ``v(x) = 0``, if ``v(x_c)`` is zero or of the other sign (a fixed
  point in between), or if the neighbouring cell does not exist.

Both forms are smooth through ``a = 0`` (``E`` and ``L`` have exact
derivatives from series near 0), so autograd through the walk gives the exact
derivative everywhere, including where difw's ``a ~ 0`` branch is wrong.

The walk is vectorised over all points of all rows. In the first pass a
point crosses iff it can hit its boundary and the in-cell flow ``psi`` has
passed it (equivalent to ``t_hit < t``); ``t_hit`` is then evaluated for the
crossing points only. From then on every moving point sits on a vertex, so
its next crossing time is the cell's vertex-to-vertex time, computed once per
(row, cell, direction). The discrete choices (cells, finish or cross) are
made without autograd and the differentiable formulas are only evaluated
where they are used, which keeps infinities and 0/0 out of the graph. Points
are compacted after every pass, and the loop stops as soon as no point needs
another crossing (at most ``nc`` passes: monotone motion crosses at most
``nc - 1`` vertices).
"""
import math
from typing import Tuple

import torch
from torch import Tensor

__all__ = ['exprel', 'log1p_ratio', 'integrate_closed_form']


def _series_threshold(dtype: torch.dtype) -> float:
    # Below it the derivative comes from a truncated series (exact to
    # rounding); above it the direct form loses at most ~eps / threshold.
    return 1e-2 if dtype == torch.float64 else 1e-1


def _horner(z: Tensor, coefficients: Tuple[float, ...]) -> Tensor:
    out = torch.full_like(z, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * z + c
    return out


# E'(z) = sum_n n z^(n-1) / (n+1)!  and  L'(z) = sum_n (-1)^n n z^(n-1) / (n+1).
_EXPREL_D = (1 / 2, 1 / 3, 1 / 8, 1 / 30, 1 / 144, 1 / 840, 1 / 5760)
_LOG1P_RATIO_D = tuple((-1) ** n * n / (n + 1) for n in range(1, 11))


class _ExpRel(torch.autograd.Function):
    """``E(z) = expm1(z) / z``, ``E(0) = 1``, with a cancellation-free derivative."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        out = torch.where(z == 0, torch.ones_like(z), torch.expm1(z) / z)
        ctx.save_for_backward(z, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        z, out = ctx.saved_tensors
        small = z.abs() < _series_threshold(z.dtype)
        z_safe = torch.where(small, torch.ones_like(z), z)
        direct = (torch.exp(z_safe) - torch.where(small, torch.ones_like(z), out)) / z_safe
        return grad * torch.where(small, _horner(z, _EXPREL_D), direct)


class _Log1pRatio(torch.autograd.Function):
    """``L(z) = log1p(z) / z``, ``L(0) = 1``, with a cancellation-free derivative."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        out = torch.where(z == 0, torch.ones_like(z), torch.log1p(z) / z)
        ctx.save_for_backward(z, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        z, out = ctx.saved_tensors
        small = z.abs() < _series_threshold(z.dtype)
        z_safe = torch.where(small, torch.ones_like(z), z)
        direct = (1 / (1 + z_safe) - torch.where(small, torch.ones_like(z), out)) / z_safe
        return grad * torch.where(small, _horner(z, _LOG1P_RATIO_D), direct)


def exprel(z: Tensor) -> Tensor:
    """``E(z) = expm1(z) / z`` (``E(0) = 1``); smooth, NaN-free gradient at 0.

    Args:
        z: Floating tensor of any shape (finite; ``exp(z)`` must not overflow).

    Returns:
        Tensor of the same shape and dtype.
    """
    return _ExpRel.apply(z)


def log1p_ratio(z: Tensor) -> Tensor:
    """``L(z) = log1p(z) / z`` (``L(0) = 1``) for ``z > -1``; NaN-free at 0.

    Args:
        z: Floating tensor of any shape, all entries ``> -1``.

    Returns:
        Tensor of the same shape and dtype.
    """
    return _Log1pRatio.apply(z)


def _hit_time(x: Tensor, a: Tensor, b: Tensor, boundary: Tensor) -> Tensor:
    """Time for ``x`` to reach ``boundary`` in the field ``a x + b``.

    Only valid where a hit exists: ``v(x)`` and ``v(boundary)`` are non-zero
    and of the same sign. When ``v(boundary) / v(x) < 1/2`` the log form
    ``log(ratio) / a`` is used (``1 + z`` would lose digits), otherwise
    ``(dx / v) L(a dx / v)``.
    """
    v = a * x + b
    dx = boundary - x
    ratio = (a * boundary + b) / v
    far = ratio < 0.5
    ratio_far = torch.where(far, ratio, torch.full_like(ratio, 0.25)).clamp_min(torch.finfo(x.dtype).tiny)
    z_near = torch.where(far, torch.zeros_like(ratio), a * dx / v)
    factor = torch.where(far, torch.log(ratio_far) / (ratio_far - 1), log1p_ratio(z_near))
    return dx / v * factor


def _flow_in_cell(x: Tensor, v: Tensor, a: Tensor, fixed: Tensor, t: Tensor, z_max: float) -> Tensor:
    """In-cell flow ``psi(x, t)`` of ``v = a x + b`` (extended beyond the cell).

    Uses ``x + t v E(t a)``, smooth through ``a = 0``. Where the cell contracts
    strongly (``t a < -1``) it uses ``x* + (x - x*) exp(t a)`` with the fixed
    point ``x* = -b / a`` instead: points converging onto ``x*`` then keep
    their order after rounding instead of cancelling in ``x + (x* - x)``.
    ``fixed`` must be finite everywhere (it is only used where ``t a < -1``).
    """
    z = (t * a).clamp(max=z_max)  # cap so that E and exp cannot overflow
    smooth = x + t * v * exprel(z)
    contracted = fixed + (x - fixed) * torch.exp(z)
    return torch.where(z < -1, contracted, smooth)


def _crossing(psi: Tensor, v: Tensor, a: Tensor, b: Tensor, cell: Tensor,
              nc: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Decide (without autograd) which free points cross into a neighbouring cell.

    A point crosses iff it moves towards an interior vertex, the velocity there
    has the same sign (no fixed point in between) and the in-cell flow ``psi``
    has passed the vertex (equivalent to ``t_hit < t``).

    Returns:
        ``cross`` (bool), the vertex each point moves towards, and the
        direction of the move (+1/-1, in ``cell``'s dtype).
    """
    with torch.no_grad():
        right = v > 0
        step = right.to(cell.dtype) * 2 - 1
        target = (cell + right.to(cell.dtype)).to(v.dtype) / nc
        v_target = a * target + b
        cross = ((psi - target) * v > 0) & (v_target * v > 0) & (target > 0) & (target < 1)
    return cross, target, step


def _traversal_times(a: Tensor, b: Tensor) -> Tensor:
    """Vertex-to-vertex crossing time of every cell, in both directions.

    Args:
        a: Cell slopes, ``(M, nc)``.
        b: Cell intercepts, ``(M, nc)``.

    Returns:
        Flat tensor of length ``2 M nc``: entry ``2 (row nc + c) + 0`` is the
        time to go from ``x_c`` to ``x_{c+1}`` (moving right), ``+ 1`` from
        ``x_{c+1}`` to ``x_c`` (moving left); ``inf`` where the velocity does
        not keep that sign over the cell or no neighbouring cell exists.
    """
    nc = a.shape[1]
    vertex = torch.arange(nc + 1, dtype=a.dtype, device=a.device) / nc
    left_x, right_x = vertex[:-1].expand_as(a), vertex[1:].expand_as(a)
    entry = torch.stack([left_x, right_x], dim=-1)  # (M, nc, 2)
    exit_ = torch.stack([right_x, left_x], dim=-1)
    a2, b2 = a[..., None].expand_as(entry), b[..., None].expand_as(entry)
    with torch.no_grad():
        sign = torch.tensor([1.0, -1.0], dtype=a.dtype, device=a.device)
        v_in, v_out = a2 * entry + b2, a2 * exit_ + b2
        inner = torch.stack([torch.arange(nc, device=a.device) < nc - 1,
                             torch.arange(nc, device=a.device) > 0], dim=-1)
        valid = (v_in * sign > 0) & (v_out * sign > 0) & inner
    one = torch.ones_like(entry)
    times = _hit_time(torch.where(valid, entry, 1 - one), torch.where(valid, a2, 0 * one),
                      torch.where(valid, b2, one), torch.where(valid, exit_, one))
    return torch.where(valid, times, torch.full_like(times, float('inf'))).reshape(-1)


def integrate_closed_form(x: Tensor, a: Tensor, b: Tensor, time: float = 1.0) -> Tensor:
    """Integrate the CPA flow of each row's field for each row's points.

    The first pass handles the free start points; every later pass only moves
    points sitting on a vertex, whose cell-crossing time is looked up in a
    per-cell table.

    Args:
        x: Start points, shape ``(M, N)``, floating dtype.
        a: Cell slopes, shape ``(M, nc)``, same dtype and device as ``x``.
        b: Cell intercepts, shape ``(M, nc)``.
        time: Integration time ``T``. Negative times integrate ``-v`` for
            ``|T|`` (the inverse flow); ``0`` returns a copy of ``x``.

    Returns:
        ``phi(x)`` of shape ``(M, N)`` in the dtype of ``x``; differentiable
        with respect to ``x``, ``a`` and ``b``.
    """
    m, n = x.shape
    nc = a.shape[1]
    if a.shape != (m, nc) or b.shape != (m, nc):
        raise ValueError(f'a and b must have shape ({m}, nc), got {tuple(a.shape)} and {tuple(b.shape)}')
    if time < 0:
        a, b, time = -a, -b, -time
    if time == 0 or x.numel() == 0:
        return x.clone()
    # Cap t*a so that E cannot overflow; it only binds for points leaving a
    # fixed point at rates whose result overflows anyway.
    z_max = 0.9 * math.log(torch.finfo(x.dtype).max)
    # Per-cell table [a, b, x*]: x* = -b/a is only needed in cells that can
    # contract (a T < -1, so |a| > 1/T); elsewhere a harmless finite value.
    fixed = -b / torch.where(a * time < -1, a, -torch.ones_like(a))
    table = torch.stack([a.reshape(-1), b.reshape(-1), fixed.reshape(-1)])  # (3, M nc)

    # Pass 1: free start points.
    xs = x.reshape(-1)
    with torch.no_grad():
        cell = torch.clamp(torch.floor(xs.detach() * nc), 0, nc - 1).long()
    pos = torch.arange(m * n, device=x.device)
    row_offset = torch.div(pos, n, rounding_mode='floor') * nc
    a_c, b_c, fixed_c = table.index_select(1, row_offset + cell)
    v = a_c * xs + b_c
    t_rem = torch.full_like(xs, float(time))
    psi = _flow_in_cell(xs, v, a_c, fixed_c, t_rem, z_max)
    cross, target, move = _crossing(psi.detach(), v.detach(), a_c.detach(), b_c.detach(), cell, nc)
    keep = cross.nonzero().squeeze(1)
    if keep.numel() == 0:
        return psi.reshape(m, n)
    fin = (~cross).nonzero().squeeze(1)
    done_pos, done_val = [pos.index_select(0, fin)], [psi.index_select(0, fin)]
    target = target.index_select(0, keep)
    t_hit = _hit_time(xs.index_select(0, keep), a_c.index_select(0, keep), b_c.index_select(0, keep), target)
    t_rem = t_rem.index_select(0, keep) - t_hit
    move = move.index_select(0, keep)
    cell = cell.index_select(0, keep) + move
    leftward = (move < 0).long()  # 0: entered through the left vertex, 1: the right one
    pos, row_offset = pos.index_select(0, keep), row_offset.index_select(0, keep)

    # Passes 2..nc: points on a vertex; at most nc - 1 crossings in total.
    traversal = _traversal_times(a, b)
    for step in range(1, nc):
        index = row_offset + cell
        tau = traversal.index_select(0, 2 * index + leftward)
        if step == nc - 1:
            cross = torch.zeros_like(tau, dtype=torch.bool)
        else:
            cross = tau.detach() < t_rem.detach()
        keep = cross.nonzero().squeeze(1)
        fin = (~cross).nonzero().squeeze(1) if keep.numel() else None
        sel = (lambda t: t) if fin is None else (lambda t: t.index_select(0, fin))
        a_f, b_f, fixed_f = table.index_select(1, sel(index))
        x_f = (sel(cell) + sel(leftward)).to(x.dtype) / nc
        done_pos.append(sel(pos))
        done_val.append(_flow_in_cell(x_f, a_f * x_f + b_f, a_f, fixed_f, sel(t_rem), z_max))
        if fin is None:
            break
        t_rem = t_rem.index_select(0, keep) - tau.index_select(0, keep)
        leftward = leftward.index_select(0, keep)
        cell = cell.index_select(0, keep) + 1 - 2 * leftward
        pos, row_offset = pos.index_select(0, keep), row_offset.index_select(0, keep)
    out_pos, out_val = torch.cat(done_pos), torch.cat(done_val)
    return x.new_zeros(m * n).index_copy(0, out_pos, out_val).reshape(m, n)
