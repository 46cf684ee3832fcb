"""Closed-form "rref" basis of the 1-D CPA velocity space (difw's default).

The domain [0, 1] is split into ``nc`` equal cells of width ``h = 1 / nc``
with vertices ``x_k = k h``. A continuous piecewise-affine velocity field is
described by its per-cell slopes and intercepts, stored interleaved as
``A = [a_0, b_0, a_1, b_1, ..., a_{nc-1}, b_{nc-1}]`` (length ``2 nc``), and
parametrised as ``A = B @ theta`` with the basis ``B`` of shape ``(2 nc, d)``.

difw (0.0.31) builds ``B`` explicitly rather than from an SVD null space. Its
columns, read as velocity fields on [0, 1], are (see ``docs/method.md`` §3.2):

* ``zero_boundary=True`` (``d = nc - 1``): for ``k = 1 .. nc-1`` a ramp that
  rises as ``x / k`` on cells ``0 .. k-1``, peaks at ``x_k`` with height ``h``,
  falls as ``x_{k+1} - x`` on cell ``k`` and is zero afterwards.
* ``zero_boundary=False`` (``d = nc + 1``), in this order: ``x_1 - x`` on
  cell 0 only; the ramps for ``k = 1 .. nc-2``; the global linear field
  ``x / nc``; and ``x - x_{nc-1}`` on the last cell only.

Every column is divided by its largest absolute entry, after which the slopes
of the global linear column are set to ``1 / nc`` (difw's convention). The
entries are formed in difw's floating-point operation order, so ``B`` equals
difw's float64 basis bit for bit (checked against the stored bases for
``nc`` in {2, 4, 5, 16, 32}), with one deliberate exception: with zero
boundary the last cell's intercept is pinned to exactly 1, since for a few
``nc`` (e.g. 49) the product ``x_nc x_{nc-1} / x_{nc-1}`` rounds to
``1 - 2**-53``, which would break ``v(1) = 0`` by one ulp. For ``nc = 1``
without zero boundary difw's construction degenerates; the basis is then the
two fields ``1 - x`` and ``x``.
"""
from typing import List, Tuple

import torch

__all__ = ['rref_basis', 'theta_dim']

# One basis column as a list of (cell, slope, intercept) triples.
_Column = List[Tuple[int, float, float]]


def theta_dim(tessellation_size: int, zero_boundary: bool = True) -> int:
    """Number of CPA parameters ``d`` for a tessellation.

    Args:
        tessellation_size: Number of cells ``nc`` (at least 1).
        zero_boundary: Whether the velocity vanishes at 0 and 1.

    Returns:
        ``nc - 1`` with zero boundary, ``nc + 1`` without.
    """
    _check_size(tessellation_size)
    return tessellation_size - 1 if zero_boundary else tessellation_size + 1


def _check_size(tessellation_size: int) -> None:
    if isinstance(tessellation_size, bool) or not isinstance(tessellation_size, int):
        raise TypeError(f'tessellation_size must be an int, got {type(tessellation_size).__name__}')
    if tessellation_size < 1:
        raise ValueError(f'tessellation_size must be >= 1, got {tessellation_size}')


def _ramp(k: int, s: float) -> _Column:
    """Un-normalised ramp peaking at vertex ``x_k`` (``s`` is the cell width).

    Slope ``s`` on cells ``0..k-1``; on cell ``k`` slope ``-x_k`` and intercept
    ``x_k x_{k+1}``. Dividing by the max-abs entry ``x_k`` gives ``x / k`` and
    ``x_{k+1} - x``; the products are formed in this order so that the
    float64 values match difw's bit for bit.
    """
    x_k, x_next = k * s, (k + 1) * s
    column = [(c, s, 0.0) for c in range(k)]
    column.append((k, -x_k, x_k * x_next))
    return column


def _columns(nc: int, zero_boundary: bool) -> List[_Column]:
    s = 1.0 / nc
    if zero_boundary:
        return [_ramp(k, s) for k in range(1, nc)]
    first = [(0, -1.0, s)]
    last = [(nc - 1, 1.0, -((nc - 1) * s))]
    if nc == 1:
        # difw's construction degenerates for a single cell (the global linear
        # field and the last-cell field coincide). Keep the two independent
        # fields 1 - x and x, which span all affine velocities.
        return [first, last]
    ramps = [_ramp(k, s) for k in range(1, nc - 1)]
    global_linear = [(c, 1.0, 0.0) for c in range(nc)]
    return [first] + ramps + [global_linear, last]


def rref_basis(tessellation_size: int, zero_boundary: bool = True) -> torch.Tensor:
    """difw's default ("rref") basis of the continuous PA velocity space.

    Args:
        tessellation_size: Number of equal cells ``nc`` on [0, 1] (at least 1).
        zero_boundary: If True the velocity is constrained to vanish at 0 and 1.

    Returns:
        A float64 CPU tensor ``B`` of shape ``(2 nc, d)``. Row ``2c`` holds the
        slopes and row ``2c + 1`` the intercepts of cell ``c`` for each of the
        ``d`` basis fields (``d = nc - 1`` with zero boundary, ``nc + 1``
        without), so that ``A = B @ theta``. Columns are max-abs normalised;
        without zero boundary the global linear column has slopes ``1 / nc``.
    """
    nc = tessellation_size
    d = theta_dim(nc, zero_boundary)
    basis = torch.zeros(2 * nc, d, dtype=torch.float64)
    for j, column in enumerate(_columns(nc, zero_boundary)):
        for cell, slope, intercept in column:
            basis[2 * cell, j] = slope
            basis[2 * cell + 1, j] = intercept
    if d > 0:
        basis = basis / basis.abs().amax(dim=0, keepdim=True)
    if zero_boundary and nc > 1:
        # x_nc * s may round to 1 - 2**-53 (e.g. nc = 49); pin the last ramp's
        # intercept to exactly 1 so that v(1) = 0 holds in floating point.
        basis[2 * nc - 1, nc - 2] = 1.0
    if not zero_boundary and nc > 1:
        basis[0::2, nc - 1] = 1.0 / nc
    return basis
