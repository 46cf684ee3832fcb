"""DiTASK: adapt a frozen linear layer through its singular values.

A frozen weight ``W = U · diag(σ) · Vᵀ`` is replaced by
``W_θ = U · diag(σ'_θ) · Vᵀ``: the singular vectors are kept and only the
spectrum moves, through a 1-D CPAB diffeomorphism φ_θ (``ditask_mm.cpab``).
Each layer has one shared θ and, optionally, one θ per task; every
transform acts on the pretrained spectrum (task transforms do not compose with
the shared one), as in the public code (``docs/fidelity.md``).

Two ways to apply φ_θ to the spectrum (``spectrum_mode``):

* ``'resample'`` (the public code): σ, sorted in descending order, is read as
  a signal on ``linspace(0, 1, k)`` and resampled at the warped positions
  φ_θ(i/(k−1)), i.e. difw's ``transform_data``. With a zero-boundary
  tessellation σ_max and σ_min are kept and the ordering is preserved.
* ``'value'`` (the paper's Eq. 6): σ'_i = σ_max · φ_θ(σ_i / σ_max).
"""
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..cpab import CPAB1D
from ..registry import MODELS
from .base import AdapterLayer, cast_weight_for
from .dropout import ByteMaskDropout
from .svd_cache import SVDCache, factored_is_cheaper, svd_dtype

SPECTRUM_MODES = ('resample', 'value')
THETA_INITS = ('zeros', 'kaiming')
COMPUTE_MODES = ('auto', 'dense', 'factored')


@MODELS.register_module()
class DiTASKLinear(AdapterLayer):
    """A frozen ``nn.Linear`` whose singular values are warped by CPAB transforms.

    Args:
        base_layer: The pretrained linear layer (frozen, adopted).
        tessellation_size: Number of CPAB cells of the shared transform.
            The public tiny config uses 64.
        tasks: Tasks with their own transform, or ``None``.
        task_tessellation_size: Cells of each task transform: one int for all
            tasks (public tiny config: 4) or a ``{task: int}`` mapping.
        num_splits: Row blocks with their own SVD that share θ. 3 for a fused
            qkv (q, k and v each get an SVD), else 1.
        shared: Whether the layer has a shared transform. A layer whose shared
            output is never used (the last block of Swin's last stage) should
            not create a θ that can never get a gradient; without one the
            shared path uses the frozen weight.
        zero_boundary: Whether the velocity field vanishes at 0 and 1 (public
            code: True). Keeps σ_max and σ_min fixed.
        theta_init: ``'zeros'`` (default: the identity, training starts from
            the pretrained weights) or ``'kaiming'``, the public code's
            ``kaiming_uniform_(a=√5)``, i.e. U(−1/√d, 1/√d). The latter is a
            quirk: it perturbs the pretrained weights before any training
            (up to ~16 % with tessellation 4); use it only to reproduce the
            paper's numbers.
        main_path_dropout: Dropout probability on the input of the shared
            path. The public code applies 0.05 to the frozen main path (unlike
            LoRA, where dropout only feeds the adapter branch); 0 disables it
            (default). Task paths called one at a time get no dropout.
        task_paths_share_dropout: Reproduce the public layer when several
            paths read one input (:meth:`forward_paths`; the task ``proj`` of
            a stage's last Swin block): with no separate task input, the
            public code feeds the task paths the *same dropped input* as the
            shared path, with the same mask. Off by default; the paper
            configs turn it on next to ``main_path_dropout=0.05``. Without
            main-path dropout it changes nothing.
        spectrum_mode: ``'resample'`` (default, public code) or ``'value'``
            (paper Eq. 6); see the module docstring.
        compute_mode: How the forward applies ``W_θ``: ``'dense'`` rebuilds
            the matrix and runs one GEMM; ``'factored'`` computes
            ``((x·Vᵀ)⊙σ')·Uᵀ`` and never forms it; ``'auto'`` (default)
            picks the one with fewer FLOPs for the call's token count
            (:func:`~ditask_mm.adapters.svd_cache.factored_is_cheaper`). Both
            give the same result up to rounding.
    """

    adapter_param_prefixes = ('theta_shared', 'theta_tasks.')

    def __init__(self,
                 base_layer: nn.Linear,
                 tessellation_size: int = 64,
                 tasks: Optional[Sequence[str]] = None,
                 task_tessellation_size: Union[int, Mapping[str, int]] = 4,
                 num_splits: int = 1,
                 shared: bool = True,
                 zero_boundary: bool = True,
                 theta_init: str = 'zeros',
                 main_path_dropout: float = 0.0,
                 task_paths_share_dropout: bool = False,
                 spectrum_mode: str = 'resample',
                 compute_mode: str = 'auto') -> None:
        super().__init__(base_layer, tasks)
        if spectrum_mode not in SPECTRUM_MODES:
            raise ValueError(f'spectrum_mode must be one of {SPECTRUM_MODES}, got {spectrum_mode!r}')
        if theta_init not in THETA_INITS:
            raise ValueError(f'theta_init must be one of {THETA_INITS}, got {theta_init!r}')
        if not 0.0 <= main_path_dropout < 1.0:
            raise ValueError(f'main_path_dropout must be in [0, 1), got {main_path_dropout}')
        if not shared and not self.tasks:
            raise ValueError('a DiTASKLinear with shared=False needs at least one task')
        self.num_splits = num_splits
        self.spectrum_mode = spectrum_mode
        if compute_mode not in COMPUTE_MODES:
            raise ValueError(f'compute_mode must be one of {COMPUTE_MODES}, got {compute_mode!r}')
        self.compute_mode = compute_mode
        self.theta_init = theta_init
        # Computed on first use (after pretrained weights load, on the final
        # device), not here.
        self.svd = SVDCache(num_splits)
        if self.out_features % num_splits:
            raise ValueError(f'num_splits={num_splits} does not divide out_features='
                             f'{self.out_features}')
        self.dropout = ByteMaskDropout(main_path_dropout) if main_path_dropout > 0 else nn.Identity()
        self.task_paths_share_dropout = bool(task_paths_share_dropout)

        self.shared_transform: Optional[CPAB1D] = None
        self.register_parameter('theta_shared', None)
        if shared:
            self.shared_transform = self._make_transform(tessellation_size, zero_boundary)
            self.theta_shared = nn.Parameter(self._init_theta(self.shared_transform.theta_dim))
        self.task_transforms = nn.ModuleDict()
        self.theta_tasks = nn.ParameterDict()
        for task in self.tasks:
            size = self._task_size(task_tessellation_size, task)
            self.task_transforms[task] = self._make_transform(size, zero_boundary)
            self.theta_tasks[task] = nn.Parameter(self._init_theta(self.task_transforms[task].theta_dim))
        self._eval_weights: Dict[Optional[str], Tuple[Tuple, Tensor]] = {}
        # Set for the span of one forward by spectrum_batch.batched_spectra.
        self.precomputed_spectra: Optional[Dict[Optional[str], Tensor]] = None

    # -------------------------------------------------------------- building
    def _task_size(self, sizes: Union[int, Mapping[str, int]], task: str) -> int:
        if isinstance(sizes, Mapping):
            if task not in sizes:
                raise KeyError(f'task_tessellation_size has no entry for task {task!r} '
                               f'(has {sorted(sizes)})')
            return int(sizes[task])
        return int(sizes)

    def _make_transform(self, tessellation_size: int, zero_boundary: bool) -> CPAB1D:
        transform = CPAB1D(tessellation_size, zero_boundary)
        return transform.to(device=self.weight.device, dtype=svd_dtype(self.weight.dtype))

    def _init_theta(self, dim: int) -> Tensor:
        theta = torch.zeros(1, dim, device=self.weight.device, dtype=svd_dtype(self.weight.dtype))
        if self.theta_init == 'kaiming':
            nn.init.kaiming_uniform_(theta, a=math.sqrt(5))
        return theta[0]

    def _apply(self, fn, recurse=True):
        was_fresh = not self.svd.is_stale(self.weight)
        old_dtype = self.svd.S.dtype
        super()._apply(fn, recurse)
        self.svd.after_apply(self.weight, was_fresh, old_dtype)
        for transform in [self.shared_transform, *self.task_transforms.values()]:
            if transform is not None:  # CPAB runs in fp32 at least, even after .half()
                transform.to(svd_dtype(self.weight.dtype))
        self._eval_weights.clear()
        return self

    # ------------------------------------------------------------- transform
    def _transform_and_theta(self, task: Optional[str]) -> Tuple[Optional[CPAB1D], Optional[Tensor]]:
        if task is None:
            return self.shared_transform, self.theta_shared
        return self.task_transforms[task], self.theta_tasks[task]

    def transform_paths(self) -> List[Tuple[Optional[str], CPAB1D, Tensor]]:
        """``(task or None, transform, θ)`` of every path that has a transform."""
        paths = [(None, self.shared_transform, self.theta_shared)] if self.shared_transform is not None else []
        return paths + [(task, self.task_transforms[task], self.theta_tasks[task]) for task in self.tasks]

    def adapted_spectrum(self, task: Optional[str] = None) -> Tensor:
        """The warped singular values σ', ``(num_splits, k)``, for ``task``.

        Args:
            task: A task of this layer, or ``None`` for the shared transform.
                Without a shared transform, ``None`` gives the pretrained σ.

        Inside :func:`~ditask_mm.adapters.spectrum_batch.batched_spectra`
        the value computed there, for the whole model at once, is returned.
        """
        self.check_task(task)
        if self.precomputed_spectra is not None and task in self.precomputed_spectra:
            return self.precomputed_spectra[task]
        _, S, _ = self.svd.get(self.weight)
        transform, theta = self._transform_and_theta(task)
        if transform is None:
            return S
        if self.spectrum_mode == 'resample':
            return transform.transform_sequence(S, theta)
        vmax = S[:, :1].clamp_min(torch.finfo(S.dtype).tiny)
        return transform.transform_values(S, theta, vmax)

    def adapted_weight(self, task: Optional[str] = None) -> Tensor:
        """``U · diag(σ'_θ) · Vᵀ`` for ``task``, ``(out_features, in_features)``.

        Computed in fp32 (fp64 for an fp64 weight) with autocast disabled. In
        eval mode under ``torch.no_grad()`` the result is cached until θ or
        the weight changes, so inference builds each weight once.
        """
        self.check_task(task)
        use_cache = not self.training and not torch.is_grad_enabled()
        if use_cache:
            key = self._eval_key(task)
            hit = self._eval_weights.get(task)
            if hit is not None and hit[0] == key:
                return hit[1]
        transform, _ = self._transform_and_theta(task)
        if transform is None:
            weight = self.weight.to(svd_dtype(self.weight.dtype))
        else:
            weight = self.svd.rebuild(self.adapted_spectrum(task))
        if use_cache:
            self._eval_weights[task] = (key, weight)
        return weight

    def _eval_key(self, task: Optional[str]) -> Tuple:
        _, theta = self._transform_and_theta(task)
        theta_key = None if theta is None else (theta.data_ptr(), theta._version)
        return theta_key, SVDCache.fingerprint(self.weight)

    def forward(self, x: Tensor, task: Optional[str] = None) -> Tensor:
        """Apply the adapted layer.

        Args:
            x: Input, ``(..., in_features)``.
            task: Task whose transform to use; ``None`` uses
                :attr:`active_task`, and a task this layer has no transform
                for uses the shared one.

        Returns:
            ``(..., out_features)``: ``x · W_θᵀ + b`` with the frozen bias.
        """
        task = self.resolve_task(task)
        if task is None:
            x = self.dropout(x)
        return self._apply_path(x, task)

    def forward_paths(self, x: Tensor, paths: Sequence[Optional[str]]) -> List[Tensor]:
        """The outputs of several paths (``None``: shared, else a task) for one input ``x``.

        Each path is :meth:`forward` of ``x``, except with
        ``task_paths_share_dropout``: then the main-path dropout is drawn once
        and every path, shared and task, reads the same dropped input (the
        public layer called without a separate task input).
        """
        if not self.task_paths_share_dropout:
            return super().forward_paths(x, paths)
        dropped = self.dropout(x)
        return [self._apply_path(dropped, self.resolve_task(path)) for path in paths]

    def _apply_path(self, x: Tensor, task: Optional[str]) -> Tensor:
        """``x · W_θᵀ + b`` for ``task`` (``None``: shared), with no dropout."""
        if task is None and self.shared_transform is None:
            return F.linear(x, self.weight, self.bias)
        bias = None if self.bias is None else cast_weight_for(x, self.bias)
        if self._use_factored(x, task):
            out = self.svd.apply_factored(x, self.adapted_spectrum(task))
            return out if bias is None else out + bias.to(out.dtype)
        weight = cast_weight_for(x, self.adapted_weight(task))
        return F.linear(x, weight, bias)

    def _use_factored(self, x: Tensor, task: Optional[str]) -> bool:
        if self.compute_mode != 'auto':
            return self.compute_mode == 'factored'
        _, theta = self._transform_and_theta(task)
        needs_grad = torch.is_grad_enabled() and theta.requires_grad
        if not needs_grad and not self.training:
            return False  # eval: the adapted weight is built once and cached
        rows = self.out_features // self.num_splits
        rank = min(rows, self.in_features)
        return factored_is_cheaper(x.numel() // self.in_features, rows, self.in_features, rank,
                                   needs_grad)

    def extra_repr(self) -> str:
        shared = (f'tessellation_size={self.shared_transform.tessellation_size}'
                  if self.shared_transform is not None else 'shared=False')
        return (f'{super().extra_repr()}, {shared}, num_splits={self.num_splits}, '
                f'spectrum_mode={self.spectrum_mode!r}')


def refresh_svd_caches(module: nn.Module) -> int:
    """Recompute the SVD of every :class:`DiTASKLinear` in ``module`` from its current weight.

    For weights written in place (a pretrained load, ``load_state_dict``);
    the caches also notice a changed weight by themselves at the next call.

    Returns:
        How many layers were refreshed.
    """
    layers = [layer for layer in module.modules() if isinstance(layer, DiTASKLinear)]
    for layer in layers:
        layer.svd.refresh(layer.weight)
    return len(layers)
