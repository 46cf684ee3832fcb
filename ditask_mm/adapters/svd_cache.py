"""A cached SVD of a frozen weight matrix, split into row blocks.

DiTASK rebuilds ``U · diag(σ') · Vᵀ`` from the SVD of a frozen weight. The
public code recomputes that SVD in every forward (264 per Swin-T step); since
the weight is frozen the factors are constant. :class:`SVDCache` keeps them in
non-persistent buffers and recomputes them only when the weight tensor itself
changes: a new storage, an in-place write (``load_state_dict`` copies in
place, which bumps the tensor's version counter), or a change of dtype. Each
forward costs one cheap fingerprint comparison, never an SVD.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..precision import autocast_disabled


def factored_is_cheaper(tokens: int, rows: int, cols: int, rank: int, needs_grad: bool) -> bool:
    """Whether ``((x·Vhᵀ)⊙σ')·Uᵀ`` costs fewer FLOPs than rebuilding ``W'``.

    Per ``rows × cols`` block of rank ``rank`` and ``tokens`` input rows,
    counting multiply-adds of forward and backward (input gradient included):

    * dense: rebuild ``W'`` (``rows·rank·cols``), ``x·W'ᵀ``, input gradient,
      and with ``needs_grad`` the weight gradient plus the rebuild's backward;
    * factored: two thin products forward and two backward.

    Args:
        tokens: Number of input rows (all leading dimensions).
        rows, cols, rank: Block shape and rank.
        needs_grad: Whether θ needs a gradient from this call.
    """
    dense_gemm = tokens * rows * cols
    rebuild = rows * rank * cols
    thin = tokens * rank * (rows + cols)
    if needs_grad:
        return 2 * thin < 3 * dense_gemm + 2 * rebuild
    return thin < dense_gemm + rebuild


def svd_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """SVD runs in fp32, or fp64 for fp64 weights; never in half precision."""
    return torch.float64 if weight_dtype == torch.float64 else torch.float32


class SVDCache(nn.Module):
    """Reduced SVD of ``weight`` split row-wise into ``num_splits`` blocks.

    Block ``i`` holds rows ``[i·out/num_splits, (i+1)·out/num_splits)`` (for
    a fused qkv, q, k and v). Each block ``W_i`` (``m × n``, ``k = min(m,n)``)
    is stored as ``U_i`` (``m × k``), ``σ_i`` (``k``, descending) and
    ``Vh_i`` (``k × n``), stacked over blocks.

    Args:
        num_splits: Number of equal row blocks.

    Attributes:
        U (Tensor): ``(num_splits, m, k)``.
        S (Tensor): ``(num_splits, k)``.
        Vh (Tensor): ``(num_splits, k, n)``.
        num_refreshes (int): How many times the SVD was computed (for tests
            and diagnostics).
    """

    def __init__(self, num_splits: int = 1) -> None:
        super().__init__()
        if num_splits < 1:
            raise ValueError(f'num_splits must be >= 1, got {num_splits}')
        self.num_splits = num_splits
        self.register_buffer('U', torch.empty(0), persistent=False)
        self.register_buffer('S', torch.empty(0), persistent=False)
        self.register_buffer('Vh', torch.empty(0), persistent=False)
        self._fingerprint: Optional[Tuple] = None
        self.num_refreshes = 0

    @staticmethod
    def fingerprint(weight: Tensor) -> Tuple:
        """What identifies the contents of ``weight`` without reading it."""
        return (weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(weight.shape))

    def is_stale(self, weight: Tensor) -> bool:
        """Whether the cached factors no longer describe ``weight``."""
        return self._fingerprint != self.fingerprint(weight)

    @torch.no_grad()
    def refresh(self, weight: Tensor) -> None:
        """Recompute the SVD of ``weight`` (``(out, in)``) in fp32 or fp64."""
        out_features = weight.shape[0]
        if out_features % self.num_splits:
            raise ValueError(f'cannot split {out_features} output rows into {self.num_splits} '
                             'equal blocks')
        blocks = weight.detach().to(svd_dtype(weight.dtype))
        blocks = blocks.reshape(self.num_splits, out_features // self.num_splits, weight.shape[1])
        with autocast_disabled(weight.device):
            if blocks.shape[-2] < blocks.shape[-1]:
                # wide blocks: LAPACK is markedly faster on the tall transpose
                Ut, S, Vht = torch.linalg.svd(blocks.transpose(-1, -2), full_matrices=False)
                U, Vh = Vht.transpose(-1, -2), Ut.transpose(-1, -2)
            else:
                U, S, Vh = torch.linalg.svd(blocks, full_matrices=False)
        self.U, self.S, self.Vh = U.contiguous(), S.contiguous(), Vh.contiguous()
        self._fingerprint = self.fingerprint(weight)
        self.num_refreshes += 1

    def get(self, weight: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Return ``(U, S, Vh)`` for ``weight``, recomputing only if stale."""
        if self.is_stale(weight):
            self.refresh(weight)
        return self.U, self.S, self.Vh

    def rebuild(self, singular_values: Tensor) -> Tensor:
        """``U · diag(σ') · Vh`` for new singular values, blocks stacked back.

        Args:
            singular_values: ``(num_splits, k)`` replacement values.

        Returns:
            The ``(out, in)`` matrix in the cache dtype (autocast disabled).
        """
        with autocast_disabled(self.U.device):
            blocks = torch.matmul(self.U * singular_values.to(self.U.dtype).unsqueeze(-2), self.Vh)
        return blocks.reshape(-1, blocks.shape[-1])

    def apply_factored(self, x: Tensor, singular_values: Tensor) -> Tensor:
        """``x · (U · diag(σ') · Vh)ᵀ`` without forming the matrix.

        Computes ``((x · Vhᵀ) ⊙ σ') · Uᵀ`` block by block. With θ requiring
        grad this skips both the weight-gradient GEMM and the rebuild, and the
        gradient of σ' is a cheap reduction of two products the input
        gradient needs anyway.

        Args:
            x: Input, ``(..., in)``.
            singular_values: ``(num_splits, k)``.

        Returns:
            ``(..., out)`` in the matmul dtype (autocast's, else ``x``'s).
        """
        lead, fan_in = x.shape[:-1], x.shape[-1]
        tokens = x.reshape(1, -1, fan_in)
        U, Vh, values = self.U, self.Vh, singular_values
        if not torch.is_autocast_enabled(x.device.type) and U.dtype != x.dtype:
            U, Vh, values = U.to(x.dtype), Vh.to(x.dtype), values.to(x.dtype)
        z = torch.matmul(tokens, Vh.transpose(-1, -2)) * values.unsqueeze(-2)  # (splits, T, k)
        out = torch.matmul(z, U.transpose(-1, -2))  # (splits, T, m)
        return out.transpose(0, 1).reshape(*lead, -1)

    def after_apply(self, weight: Tensor, was_fresh: bool, old_dtype: torch.dtype) -> None:
        """Keep the cache valid after ``module._apply`` (``.to()``, ``.half()``...).

        Args:
            weight: The weight after the conversion.
            was_fresh: Whether the cache described the weight before it.
            old_dtype: The dtype of the cached factors before it.

        Moving between devices moves the buffers with the weight, so the
        factors stay valid and only the fingerprint is renewed. A cast to half
        precision casts the buffers back to fp32 (the factors came from the
        more precise weight). A cast that raises the precision (to fp64)
        marks the cache stale so that the SVD is recomputed in fp64.
        """
        wanted = svd_dtype(weight.dtype)
        if not was_fresh or self.S.numel() == 0 or wanted.itemsize > old_dtype.itemsize:
            self._fingerprint = None
            return
        if self.S.dtype != wanted:
            self.U, self.S, self.Vh = (t.to(wanted) for t in (self.U, self.S, self.Vh))
        self._fingerprint = self.fingerprint(weight)

    def extra_repr(self) -> str:
        return f'num_splits={self.num_splits}, cached={self._fingerprint is not None}'
