"""Gradient-level balancers: the per-task gradients of the shared parameters, combined by an aggregator.

A gradient-level balancer (``kind = 'gradient'``) does not rescale losses.
The training step (:func:`~.gradient_step.balanced_update`) back-propagates
each task's loss separately over the parameters that several tasks share,
stacks the gradients into a Jacobian ``J`` (one row per task), and asks the
balancer for the direction ``d = wᵀJ`` written into ``.grad``. The
task-specific parameters and the heads get their own task's gradient from one
ordinary backward pass.

The aggregators are `torchjd <https://github.com/TorchJD/torchjd>`_'s
(``torchjd.aggregation``, pinned in ``requirements/pinned.txt``): a
maintained library whose aggregators are tested against their papers, all of
the Gramian-weighted kind, i.e. the weights ``w`` are a function of the
Gramian ``G = JJᵀ`` alone. That is what makes them cheap under DDP: after the
Jacobian is all-reduced, every rank solves the same ``T × T`` problem. The
weights are computed in fp64 from the Gramian, then broadcast from rank 0 so
that a randomised method (PCGrad's random task order) gives every rank the
same update.

The Gramian is normalised to a unit mean diagonal before the solve. The
weights of every method here are unchanged when all gradients are scaled by
one factor, but torchjd's thresholds are absolute (``norm_eps = 1e-4`` on the
Gramian of CAGrad and UPGrad): with small gradients, and DiTASK's θ
gradients can be small, CAGrad would return zero weights and the shared
parameters would stop moving without a word.

Rows that are exactly zero (a task with no labels in the batch, e.g. human
parts on PASCAL images without parts) are left out of the aggregation: MGDA's
min-norm point would otherwise be the zero vector and the shared parameters
would not move at all.

Scale: the rows are the gradients of the task losses *with their configured
weights* (``model.loss_decode.<task>.loss_weight``), so the configured
weights still set the tasks' relative scale, as the methods' papers assume
losses on comparable scales. PCGrad sums (without conflicts its weights are
all 1, the fixed-weights gradient); MGDA, CAGrad, Aligned-MTL and UPGrad
average (UPGrad's weights are all ``1/T`` without conflicts), which is a
learning rate about ``T`` times smaller than the summed losses' for the
shared parameters; ``scale`` multiplies the direction (``scale=T`` restores
the sum's step size).
"""
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from ....registry import MODELS
from .base import LossBalancer, distributed_world_size, unit_weights


class GradientBalancer(LossBalancer):
    """Base class of the gradient-level balancers: a torchjd aggregator and the bookkeeping around it.

    Subclasses implement :meth:`build_aggregator`. State: none (the methods
    here are stateless), so the checkpoint holds no ``loss_balancer.`` keys and
    a checkpoint trained without a balancer loads unchanged.

    Extra cost per step, every method: ``T − 1`` more backward passes (one per
    task, over the shared parameters), a ``T × n`` Jacobian of the ``n``
    shared trainable numbers (under DDP one all-reduce of it, one of the
    task-specific gradients and a broadcast of ``T`` weights, instead of
    DDP's bucketed all-reduce), a walk of the autograd graph (a few ms), and
    the method's own ``T × T`` solve (measured in ``docs/benchmarks.md``).

    Args:
        tasks: The segmentor's tasks.
        scale: Factor on the combined direction of the shared parameters.
    """

    kind = 'gradient'

    def __init__(self, tasks: Sequence[str], scale: float = 1.0) -> None:
        super().__init__(tasks)
        if not scale > 0:
            raise ValueError(f'{type(self).__name__}.scale must be positive, got {scale!r}')
        self.scale = float(scale)
        self.aggregator = self.build_aggregator()

    def build_aggregator(self):
        """The ``torchjd.aggregation`` aggregator (a ``GramianWeightedAggregator``)."""
        raise NotImplementedError

    # ------------------------------------------------------------ the method
    def gramian_weights(self, gramian: Tensor) -> Tensor:
        """The aggregator's weights for a Gramian ``G = JJᵀ`` of shape ``(m, m)``, ``m ≥ 2``; shape ``(m,)``."""
        return self.aggregator.gramian_weighting(gramian)

    def combine(self, jacobian: Tensor) -> Tuple[Tensor, Tensor]:
        """Combine the rows of a Jacobian into one direction.

        Args:
            jacobian: ``(m, n)``, one (unscaled, all-reduced) gradient per
                task, ``m ≥ 1``.

        Returns:
            ``(direction, weights)``: the direction ``scale · wᵀJ``, shape
            ``(n,)``, in the Jacobian's dtype, and the weights ``w``, shape
            ``(m,)`` (0 for all-zero rows), identical on every rank.
        """
        if jacobian.dim() != 2 or jacobian.shape[0] < 1:
            raise ValueError(f'{type(self).__name__}.combine needs an (m, n) Jacobian with m >= 1, '
                             f'got shape {tuple(jacobian.shape)}')
        rows = jacobian.double()
        active = (rows != 0).any(dim=1)
        weights = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
        count = int(active.sum())
        if count == 1:
            weights[active] = 1.0
        elif count > 1:
            live = rows[active]
            gramian = live @ live.T
            weights[active] = self.gramian_weights(gramian / gramian.diagonal().mean()).to(weights)
        if distributed_world_size() > 1:
            dist.broadcast(weights, src=0)
        direction = (weights.to(jacobian.dtype) @ jacobian) * self.scale
        return direction, weights

    def task_weights(self, task_losses: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """On the loss path (validation losses, a bare ``forward``): weight 1, the losses as configured."""
        return unit_weights(task_losses), {}

    def extra_repr(self) -> str:
        return f'tasks={list(self.tasks)}, aggregator={self.aggregator!r}, scale={self.scale}'


def _torchjd():
    try:
        from torchjd import aggregation
    except ImportError as err:  # pragma: no cover - the pinned stack has it
        raise ImportError('the gradient-level loss balancers need torchjd (requirements/pinned.txt); install it '
                          'with `pip install "torchjd[cagrad,quadprog-projector]==0.18.0"` or rerun '
                          'tools/setup_env.sh') from err
    return aggregation


@MODELS.register_module()
class PCGrad(GradientBalancer):
    """PCGrad, gradient surgery (Yu et al., NeurIPS 2020).

    Each task gradient is projected onto the normal plane of every other
    task gradient it conflicts with (negative inner product), in a random
    order of the other tasks, and the projected gradients are summed.
    Solve: ``O(T³)`` on the Gramian.
    """

    def build_aggregator(self):
        return _torchjd().PCGrad()


@MODELS.register_module()
class MGDA(GradientBalancer):
    """MGDA-UB's min-norm point (Sener & Koltun, NeurIPS 2018), by Frank-Wolfe.

    The direction is the minimum-norm point of the convex hull of the task
    gradients (weights on the simplex): the common descent direction of
    multiple-gradient descent. It is applied to the shared parameters'
    gradients themselves, not MGDA-UB's upper bound on the features.

    Args:
        tasks: The segmentor's tasks.
        epsilon: Frank-Wolfe stops when the step falls below it.
        max_iters: Frank-Wolfe iterations at most.
        scale: Factor on the direction.
    """

    def __init__(self, tasks: Sequence[str], epsilon: float = 1e-3, max_iters: int = 100, scale: float = 1.0) -> None:
        self.epsilon, self.max_iters = epsilon, max_iters
        super().__init__(tasks, scale=scale)

    def build_aggregator(self):
        return _torchjd().MGDA(epsilon=self.epsilon, max_iters=self.max_iters)


@MODELS.register_module()
class CAGrad(GradientBalancer):
    """CAGrad, conflict-averse gradient descent (Liu et al., NeurIPS 2021).

    The direction maximises the worst task's improvement within a ball of
    radius ``c·‖g₀‖`` around the average gradient ``g₀``. ``c = 0`` gives the
    average gradient. torchjd solves the dual with cvxpy's CLARABEL solver
    (the authors use scipy's SLSQP) and returns ``g₀ + (c‖g₀‖/‖g_w‖)·g_w``
    without the authors' optional ``1/(1+c²)`` rescaling.

    Args:
        tasks: The segmentor's tasks.
        c: The radius factor (the paper's PASCAL/NYUD experiments use 0.4).
        scale: Factor on the direction.
    """

    def __init__(self, tasks: Sequence[str], c: float = 0.4, scale: float = 1.0) -> None:
        self.c = c
        super().__init__(tasks, scale=scale)

    def build_aggregator(self):
        return _torchjd().CAGrad(c=self.c)


@MODELS.register_module()
class AlignedMTL(GradientBalancer):
    """Aligned-MTL (Senushkin et al., CVPR 2023).

    Aligns the task gradients by making the Jacobian's singular values equal
    (the condition number 1, the paper's stability criterion), which removes
    both conflicting directions and dominating gradient magnitudes; the
    aligned gradients are averaged.

    Args:
        tasks: The segmentor's tasks.
        scale_mode: torchjd's choice of the common singular value:
            ``'min'`` (the paper's), ``'median'`` or ``'rmse'``.
        scale: Factor on the direction.
    """

    def __init__(self, tasks: Sequence[str], scale_mode: str = 'min', scale: float = 1.0) -> None:
        self.scale_mode = scale_mode
        super().__init__(tasks, scale=scale)

    def build_aggregator(self):
        return _torchjd().AlignedMTL(scale_mode=self.scale_mode)


@MODELS.register_module()
class UPGrad(GradientBalancer):
    """UPGrad, unconflicting projection of gradients (Quinton & Rey, 2024, "Jacobian descent").

    Each task gradient is projected onto the dual cone of all task gradients
    (the set of directions that conflict with none of them), and the
    projections are averaged. The result never conflicts with any task
    (``d·g_t ≥ 0`` for every ``t``); without conflicts it is the average
    gradient. torchjd solves the ``T`` small quadratic programs with quadprog.

    Args:
        tasks: The segmentor's tasks.
        scale: Factor on the direction.
    """

    def build_aggregator(self):
        return _torchjd().UPGrad()


#: The gradient-level balancers, by their registered names.
GRADIENT_BALANCERS: Tuple[str, ...] = ('PCGrad', 'MGDA', 'CAGrad', 'AlignedMTL', 'UPGrad')


def is_gradient_balancer(balancer: Optional[LossBalancer]) -> bool:
    """Whether ``balancer`` is set and combines gradients (``kind == 'gradient'``)."""
    return balancer is not None and getattr(balancer, 'kind', 'loss') == 'gradient'
