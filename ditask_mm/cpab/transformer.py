"""``CPAB1D``: 1-D CPAB diffeomorphisms of [0, 1] in pure PyTorch.

The transformation follows difw 0.0.31 (``docs/method.md`` §3): ``nc`` equal cells
on [0, 1], difw's "rref" basis, ``A = B theta``, and the flow
``phi_theta(x) = x(T)`` of ``dx/dt = v_theta(x)`` integrated in closed form.

Shapes and broadcasting (``d = theta_dim``):

* ``theta`` is ``(d,)`` (one transformation) or ``(B, d)`` (a batch).
* Point sets are ``(N,)`` (shared by the batch) or ``(B, N)`` (one row per
  transformation); a batch size of 1 on either side broadcasts.
* Results are ``(N,)`` when every input is unbatched, otherwise ``(B, N)``.

Dtypes: everything is computed in the promoted floating dtype of the inputs
(not of the module), but at least float32: float16/bfloat16 inputs are
upcast, and autocast is disabled inside. Results are returned in that compute
dtype. The basis is used in the compute dtype, rounded once from its exact
float64 values (so float64 inputs get the exact basis even when the module's
buffer is float32).
"""
import functools
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..precision import autocast_disabled, compute_dtype
from .basis import rref_basis, theta_dim
from .integration import integrate_closed_form
from .interpolation import resample_at_indices

__all__ = ['CPAB1D']

def _check_tensor(name: str, value: Tensor) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(value).__name__}')
    if not value.is_floating_point():
        raise TypeError(f'{name} must be a floating-point tensor, got dtype {value.dtype}')
    if value.dim() not in (1, 2):
        raise ValueError(f'{name} must be 1-D or 2-D (batched), got shape {tuple(value.shape)}')


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The promoted dtype of ``tensors``, upcast to fp32 if it is fp16/bf16."""
    return compute_dtype(functools.reduce(torch.promote_types, [t.dtype for t in tensors]))


def _batch_size(theta: Tensor, other: Tensor, other_name: str) -> int:
    rows_t = theta.shape[0] if theta.dim() == 2 else 1
    rows_o = other.shape[0] if other.dim() == 2 else 1
    if rows_t != rows_o and 1 not in (rows_t, rows_o):
        raise ValueError(f'batch size mismatch: theta has {rows_t} rows but {other_name} has {rows_o}')
    return max(rows_t, rows_o)


class CPAB1D(nn.Module):
    """Continuous piecewise-affine-based diffeomorphisms of the unit interval.

    Args:
        tessellation_size: Number of equal cells ``nc`` of [0, 1] (>= 1).
        zero_boundary: If True the velocity vanishes at 0 and 1, so every
            transformation maps [0, 1] onto itself with ``phi(0) = 0`` and
            ``phi(1) = 1``. Without it the end cells' fields extend to the
            whole real line and ``phi`` is a diffeomorphism of R.

    Attributes:
        basis: Buffer of shape ``(2 nc, d)``, difw's rref basis (rows
            interleave per-cell slopes and intercepts). Created in the default
            dtype; it follows ``.to()``, ``.double()`` etc. and is re-derived
            exactly in the new dtype. Not saved in the state dict (it is a
            function of the two arguments).
        tessellation_size: ``nc``.
        zero_boundary: The boundary setting.
    """

    def __init__(self, tessellation_size: int, zero_boundary: bool = True) -> None:
        super().__init__()
        basis = rref_basis(tessellation_size, bool(zero_boundary))
        self.tessellation_size = tessellation_size
        self.zero_boundary = bool(zero_boundary)
        self.register_buffer('basis', basis.to(torch.get_default_dtype()), persistent=False)
        self._exact_basis: Dict[str, Tensor] = {}

    def _apply(self, fn, *args, **kwargs):
        # Re-derive the basis after a cast so that e.g. ``.double()`` yields the
        # exact float64 basis rather than an upcast of rounded float32 values.
        super()._apply(fn, *args, **kwargs)
        exact = rref_basis(self.tessellation_size, self.zero_boundary)
        self.basis = exact.to(device=self.basis.device, dtype=self.basis.dtype)
        return self

    @property
    def theta_dim(self) -> int:
        """Number of parameters ``d``: ``nc - 1`` with zero boundary, else ``nc + 1``."""
        return theta_dim(self.tessellation_size, self.zero_boundary)

    def extra_repr(self) -> str:
        return (f'tessellation_size={self.tessellation_size}, zero_boundary={self.zero_boundary}, '
                f'theta_dim={self.theta_dim}')

    def identity(self, batch: Optional[int] = None) -> Tensor:
        """Parameters of the identity map: zeros of the basis' dtype and device.

        Args:
            batch: If given, return shape ``(batch, d)``; otherwise ``(d,)``.

        Returns:
            A zero tensor ``theta``.
        """
        shape = (self.theta_dim,) if batch is None else (batch, self.theta_dim)
        return torch.zeros(shape, dtype=self.basis.dtype, device=self.basis.device)

    # ----------------------------------------------------------------- helpers
    def _check_theta(self, theta: Tensor) -> None:
        _check_tensor('theta', theta)
        if theta.shape[-1] != self.theta_dim:
            raise ValueError(
                f'theta must have last dimension {self.theta_dim} (tessellation_size='
                f'{self.tessellation_size}, zero_boundary={self.zero_boundary}), got shape '
                f'{tuple(theta.shape)}')

    def _basis_for(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The basis in ``dtype`` on ``device``, rounded once from exact float64."""
        if self.basis.dtype == dtype and self.basis.device == device:
            return self.basis
        key = str(device)
        if key not in self._exact_basis:
            self._exact_basis[key] = rref_basis(self.tessellation_size, self.zero_boundary).to(device)
        return self._exact_basis[key].to(dtype)

    def _slopes_intercepts(self, theta: Tensor, rows: int) -> Tuple[Tensor, Tensor]:
        """``A = B theta`` split into slopes and intercepts, each ``(rows, nc)``."""
        basis = self._basis_for(theta.dtype, theta.device)
        theta = theta if theta.dim() == 2 else theta[None]
        # A multiply-and-sum instead of a matmul: each row is reduced in the same
        # order whatever the batch size, so batched results equal row-by-row ones.
        params = (theta[:, None, :] * basis).sum(dim=-1)
        params = params.reshape(-1, self.tessellation_size, 2)
        a = params[..., 0].expand(rows, -1).contiguous()
        b = params[..., 1].expand(rows, -1).contiguous()
        return a, b

    def _phi(self, x: Tensor, theta: Tensor, time: float) -> Tensor:
        """``phi`` on already validated, same-dtype inputs; always ``(B, N)``."""
        rows = _batch_size(theta, x, 'x')
        a, b = self._slopes_intercepts(theta, rows)
        points = x.reshape(-1, x.shape[-1]).expand(rows, -1)
        return integrate_closed_form(points, a, b, time)

    # -------------------------------------------------------------- public API
    def transform_points(self, x: Tensor, theta: Tensor, time: float = 1.0) -> Tensor:
        """Apply ``phi_theta`` (the flow at time ``time``) to points.

        Args:
            x: Points, ``(N,)`` shared by all transformations or ``(B, N)``.
                Any real values; outside [0, 1] the end cells' fields apply.
            theta: Parameters, ``(d,)`` or ``(B, d)``.
            time: Integration time (default 1). A negative time integrates the
                reversed field, i.e. gives the inverse flow of ``|time|``.

        Returns:
            ``phi_theta(x)``, ``(N,)`` if ``x`` and ``theta`` are both 1-D,
            otherwise ``(B, N)``; in the compute dtype (see module docstring).
            Differentiable with respect to ``x`` and ``theta``.
        """
        _check_tensor('x', x)
        self._check_theta(theta)
        time = float(time)
        if time != time or abs(time) == float('inf'):
            raise ValueError(f'time must be finite, got {time}')
        dtype = _compute_dtype(theta, x)
        with autocast_disabled(theta.device):
            phi = self._phi(x.to(dtype), theta.to(dtype), time)
        return phi[0] if x.dim() == 1 and theta.dim() == 1 else phi

    def transform_sequence(self, s: Tensor, theta: Tensor, out_len: Optional[int] = None) -> Tensor:
        """Warp signals by the pull-back ``s o phi_theta`` (difw's ``transform_data``).

        A signal of length ``k`` is read as the piecewise-linear function on
        [0, 1] with samples at ``linspace(0, 1, k)``; it is sampled (linear
        interpolation, clamped at both ends) at
        ``phi_theta(linspace(0, 1, out_len))``. Where ``phi(x) > x`` the output
        at ``x`` reads from further right, so features move left. The index
        position ``phi(g_j) (k - 1)`` is formed as ``j (k - 1) / (out_len - 1)
        + (phi(g_j) - g_j) (k - 1)``, equal up to rounding, so that
        ``theta = 0`` with ``out_len == k`` returns ``s`` exactly.

        Args:
            s: Signals, ``(k,)`` (broadcast over a batch of ``theta``) or
                ``(B, k)``, with ``k >= 1``.
            theta: Parameters, ``(d,)`` (one map for all rows) or ``(B, d)``.
            out_len: Output length (default ``k``).

        Returns:
            ``(out_len,)`` if ``s`` and ``theta`` are both 1-D, otherwise
            ``(B, out_len)``; in the compute dtype of ``s`` and ``theta``.
        """
        _check_tensor('s', s)
        self._check_theta(theta)
        _batch_size(theta, s, 's')
        length = s.shape[-1]
        out_len = length if out_len is None else out_len
        if isinstance(out_len, bool) or not isinstance(out_len, int) or out_len < 1:
            raise ValueError(f'out_len must be a positive int, got {out_len!r}')
        if length < 1:
            raise ValueError('s must have at least one sample')
        dtype = _compute_dtype(theta, s)
        with autocast_disabled(theta.device):
            grid = torch.linspace(0, 1, out_len, dtype=dtype, device=theta.device)
            phi = self._phi(grid, theta.to(dtype), 1.0)
            # p = phi (k-1), written as base + displacement so that the
            # identity lands exactly on the sample nodes when out_len == k.
            base = torch.arange(out_len, dtype=dtype, device=theta.device) * (length - 1)
            base = base / max(out_len - 1, 1)
            positions = base + (phi - grid) * (length - 1)
            values = s.to(dtype).reshape(-1, length)
            out = resample_at_indices(values, positions)
        return out[0] if s.dim() == 1 and theta.dim() == 1 else out

    def transform_values(self, v: Tensor, theta: Tensor, vmax: Union[float, Tensor]) -> Tensor:
        """Warp values in ``[0, vmax]``: ``vmax * phi_theta(v / vmax)`` (paper Eq. 6).

        Args:
            v: Values, ``(N,)`` or ``(B, N)``.
            theta: Parameters, ``(d,)`` or ``(B, d)``.
            vmax: Positive scale: a number, or a tensor broadcastable to ``v``
                (e.g. ``(B, 1)`` for one scale per row; ``v / vmax`` must be at
                most 2-D).

        Returns:
            The warped values, shaped like ``transform_points(v / vmax, theta)``
            (``(N,)`` only if ``v / vmax`` and ``theta`` are 1-D), in the compute
            dtype of ``v``, ``theta`` and a tensor ``vmax``.
        """
        _check_tensor('v', v)
        self._check_theta(theta)
        tensors = [theta, v]
        if isinstance(vmax, Tensor):
            if not vmax.is_floating_point():
                vmax = vmax.to(torch.get_default_dtype())
            tensors.append(vmax)
        elif isinstance(vmax, bool) or not isinstance(vmax, (int, float)) or not vmax > 0:
            raise ValueError(f'vmax must be a positive number or a tensor, got {vmax!r}')
        dtype = _compute_dtype(*tensors)
        with autocast_disabled(theta.device):
            scale = vmax.to(dtype) if isinstance(vmax, Tensor) else float(vmax)
            u = v.to(dtype) / scale
            if u.dim() > 2:
                raise ValueError(f'v / vmax must be at most 2-D, got shape {tuple(u.shape)}')
            return self.transform_points(u, theta.to(dtype)) * scale
