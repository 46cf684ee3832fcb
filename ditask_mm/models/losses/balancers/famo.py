"""FAMO: Fast Adaptive Multitask Optimization (Liu, Feng, Stone & Liu, NeurIPS 2023)."""
from typing import Dict, Mapping, Sequence, Tuple

import torch
from torch import Tensor

from ....registry import MODELS
from .base import LossBalancer, all_reduce_mean

_OPTIMIZERS = ('adam', 'sgd')


@MODELS.register_module()
class FAMO(LossBalancer):
    """Weigh the tasks so that their log losses fall at a similar rate.

    With task logits ``ξ`` (``logits``, initialised to 0), ``z = softmax(ξ)``
    and the step's losses ``L_t``, the objective is the paper's

        ``c · Σ_t z_t · log(L_t + ε)``,  ``c = (Σ_t z_t / (L_t + ε))⁻¹``,

    with ``z`` and ``c`` constants in the backward pass, whose gradient is
    ``Σ_t w_t ∇L_t`` with ``w_t = c·z_t / (L_t + ε)`` (the ``w_t`` sum to 1
    when ``ε`` is negligible, so the update is a convex combination of the task
    gradients). The weighted loss entries carry ``w_t·L_t``: the same
    gradient, with ``w_t`` computed from the losses all-reduced across ranks
    (so the DDP mean of the per-rank gradients is the gradient of the global
    objective, not a mean of per-rank log ratios). The loss *value* therefore
    differs from ``c·Σ z log(L + ε)``; only the gradient matters.

    Logit update (Liu et al. 2023, Sec. 3 and Algorithm 2 in Appendix C):
    after a step from ``θ_k`` to ``θ_{k+1}``, with
    ``δ_t = log(L_t(θ_k) + ε) − log(L_t(θ_{k+1}) + ε)``, the gradient of the
    logits is ``J_z(ξ)ᵀ δ = z ⊙ (δ − (zᵀδ)·1)`` (softmax Jacobian), plus the
    decay ``γ·ξ``; ``optimizer='adam'`` (the paper's practical choice) takes an
    Adam step (betas 0.9/0.999, eps 1e-8, the decay added to the gradient, as
    ``torch.optim.Adam(weight_decay=γ)``), ``optimizer='sgd'`` takes
    ``ξ ← ξ − β (J_zᵀδ + γ ξ)`` (Algorithm 1).

    Deviation from the paper, stated: the paper evaluates ``L(θ_{k+1})`` on
    the same batch with an extra forward pass. Here no extra pass is run:
    ``L_t(θ_{k+1})`` is the NEXT step's loss (on the next batch), so the
    logits are updated at the start of each step, from the previous step's and
    this step's losses, before this step's weights are computed. The first step
    has no previous losses and leaves the logits at 0 (uniform ``z``). With
    gradient accumulation the update happens once per forward pass. The loss
    lower bounds of the paper (``min_losses``) are taken as 0.

    Defaults: ``lr`` β = 0.025 and ``weight_decay`` γ = 1e-3 (Algorithm 2;
    the authors' code defaults to γ = 1e-5), ``eps`` ε = 1e-8.

    State (persistent buffers, saved in the checkpoint): ``logits``, the Adam
    moments and step count (``exp_avg``, ``exp_avg_sq``, ``adam_steps``) and
    the previous step's losses (``previous_losses``, ``has_previous``). The
    logits are updated from losses all-reduced (mean) across ranks, with the
    same arithmetic on every rank, so they stay identical on all ranks. The
    logits are buffers, not parameters: the segmentor's optimizer never sees
    them. Updates, and the all-reduce, happen in training mode only (in eval
    mode the weights come from this rank's losses).

    Extra cost per step: one all-reduce of ``T`` numbers and ``O(T)``
    arithmetic; no extra forward or backward pass.

    Args:
        tasks: The segmentor's tasks.
        lr: Step size β of the logits.
        weight_decay: Decay γ of the logits.
        eps: ε inside the logarithms.
        optimizer: ``'adam'`` or ``'sgd'``, the logits' update rule.
    """

    def __init__(self, tasks: Sequence[str], lr: float = 0.025, weight_decay: float = 1e-3, eps: float = 1e-8,
                 optimizer: str = 'adam') -> None:
        super().__init__(tasks)
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f'FAMO.optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}')
        for name, value in (('lr', lr), ('eps', eps)):
            if not value > 0:
                raise ValueError(f'FAMO.{name} must be positive, got {value!r}')
        if weight_decay < 0:
            raise ValueError(f'FAMO.weight_decay must be >= 0, got {weight_decay!r}')
        self.lr, self.weight_decay, self.eps, self.optimizer = float(lr), float(weight_decay), float(eps), optimizer
        self.adam_betas, self.adam_eps = (0.9, 0.999), 1e-8
        num_tasks = len(self.tasks)
        self.register_buffer('logits', torch.zeros(num_tasks))
        self.register_buffer('exp_avg', torch.zeros(num_tasks))
        self.register_buffer('exp_avg_sq', torch.zeros(num_tasks))
        self.register_buffer('adam_steps', torch.zeros((), dtype=torch.long))
        self.register_buffer('previous_losses', torch.zeros(num_tasks))
        self.register_buffer('has_previous', torch.zeros((), dtype=torch.bool))

    def softmax_weights(self) -> Tensor:
        """``z = softmax(ξ)``, shape ``(T,)``."""
        return torch.softmax(self.logits, dim=0)

    def logit_gradient(self, previous: Tensor, current: Tensor) -> Tensor:
        """``J_z(ξ)ᵀ δ + γ ξ`` for the losses of two consecutive steps, each of shape ``(T,)``."""
        decrease = torch.log(previous + self.eps) - torch.log(current + self.eps)
        z = self.softmax_weights()
        return z * (decrease - (z * decrease).sum()) + self.weight_decay * self.logits

    def update_logits(self, current: Tensor) -> None:
        """One step of the logits from ``previous_losses`` to ``current`` (all-reduced losses, shape ``(T,)``)."""
        grad = self.logit_gradient(self.previous_losses, current)
        if self.optimizer == 'sgd':
            self.logits -= self.lr * grad
            return
        beta1, beta2 = self.adam_betas
        self.adam_steps += 1
        step = int(self.adam_steps)
        self.exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        corrected_avg = self.exp_avg / (1 - beta1**step)
        corrected_sq = self.exp_avg_sq / (1 - beta2**step)
        self.logits -= self.lr * corrected_avg / (corrected_sq.sqrt() + self.adam_eps)

    def task_weights(self, task_losses: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        current = self._stacked(task_losses).to(self.logits)
        if self.training:  # every rank trains; outside training a loss may be evaluated on one rank alone
            current = all_reduce_mean(current)
            if bool(self.has_previous):
                self.update_logits(current)
            self.previous_losses.copy_(current)
            self.has_previous.fill_(True)
        inverse = self.softmax_weights() / (current + self.eps)
        weights = inverse / inverse.sum()  # c · z_t / (L_t + ε)
        return {task: weights[i] for i, task in enumerate(self.tasks)}, {}

    def extra_log(self) -> Dict[str, Tensor]:
        z = self.softmax_weights()
        return {f'famo_z.{task}': z[i] for i, task in enumerate(self.tasks)}
