"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""
from typing import Dict, Mapping, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ....registry import MODELS
from .base import LossBalancer


@MODELS.register_module()
class UncertaintyWeighting(LossBalancer):
    """Learn one log-variance per task and weigh each loss by its precision.

    With ``s_t = log σ_t²`` (``log_vars``, one per task, initialised to 0)
    the objective is

        ``L = Σ_t f_t · (exp(−s_t) · L_t + s_t)``

    with ``f_t = 0.5`` for the tasks in ``regression_tasks`` and 1 otherwise.
    For a regression task this is the paper's Gaussian-likelihood form
    ``L_t / (2σ_t²) + log σ_t`` (Kendall et al. 2018, Sec. 3); for
    the other tasks it is the common simplification ``exp(−s_t)·L_t + s_t``
    of the paper's classification bound ``L_t / σ_t² + log σ_t`` (the
    regulariser ``s_t`` instead of ``s_t / 2``), which keeps the optimum at
    ``exp(s_t) = L_t``. ``s_t`` is unconstrained, so the weight ``f_t·exp(−s_t)``
    stays positive. The weighted loss entries carry ``f_t·exp(−s_t)·L_t``;
    the regulariser ``Σ_t f_t·s_t`` is the extra entry
    ``balance.loss_uncertainty``. Gradient wrt ``s_t``: ``f_t·(1 − exp(−s_t)·L_t)``.

    State: ``log_vars``, an ``nn.Parameter`` of the segmentor (optimised by
    the segmentor's optimizer and saved in its checkpoint as
    ``loss_balancer.log_vars``). Under DDP its gradient is all-reduced like
    any other parameter's, so it stays identical on all ranks. Exclude it from
    weight decay (``paramwise_cfg.custom_keys={'loss_balancer': dict(decay_mult=0.)}``),
    which would otherwise pull every weight towards 1.

    Extra cost per step: ``T`` exponentials and one extra parameter of ``T``
    entries in the backward pass and the optimizer.

    Args:
        tasks: The segmentor's tasks.
        regression_tasks: Tasks given the factor 0.5 (e.g. ``['normals',
            'depth']``); must be among ``tasks``.
    """

    def __init__(self, tasks: Sequence[str], regression_tasks: Sequence[str] = ()) -> None:
        super().__init__(tasks)
        unknown = sorted(set(regression_tasks) - set(self.tasks))
        if unknown:
            raise ValueError(f'UncertaintyWeighting.regression_tasks names {unknown}, which are not among the '
                             f'tasks {list(self.tasks)}; remove them or add the tasks')
        self.regression_tasks = tuple(regression_tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))
        factors = [0.5 if task in self.regression_tasks else 1.0 for task in self.tasks]
        self.register_buffer('factors', torch.tensor(factors), persistent=False)

    def task_weights(self, task_losses: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        weights_vector = self.factors * torch.exp(-self.log_vars)
        weights = {task: weights_vector[i] for i, task in enumerate(self.tasks)}
        return weights, {'uncertainty': (self.factors * self.log_vars).sum()}

    def extra_log(self) -> Dict[str, Tensor]:
        return {f'log_var.{task}': self.log_vars[i] for i, task in enumerate(self.tasks)}
