"""Fixed task weights: the losses as configured (the behaviour without a balancer)."""
from typing import Dict, Mapping, Tuple

from torch import Tensor

from ....registry import MODELS
from .base import LossBalancer, unit_weights


@MODELS.register_module()
class FixedWeights(LossBalancer):
    """Weight 1 for every task: ``L = Σ_t L_t``, each ``L_t`` carrying its config weight.

    This is the default (a segmentor without ``loss_balancer`` sums its
    losses the same way and has no balancer module); configuring it
    explicitly only adds the ``balance.weight.<task>`` log entries (all 1).
    The loss entries equal the unbalanced ones bit for bit (``x · 1.0 == x``).

    State: none, so nothing to keep identical across ranks. Extra cost per
    step: one multiplication per loss entry.

    Args:
        tasks: The segmentor's tasks.
    """

    def task_weights(self, task_losses: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        return unit_weights(task_losses), {}
