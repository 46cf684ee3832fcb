"""Multi-task loss balancers: how the per-task losses, or their gradients, are combined each step.

``model.loss_balancer`` of :class:`~ditask_mm.models.segmentors.MultiTaskSegmentor`
selects one (none: the configured loss weights, as :class:`FixedWeights`).
Loss-level methods (``kind = 'loss'``): :class:`FixedWeights`,
:class:`UncertaintyWeighting`, :class:`DWA`, :class:`FAMO`. Gradient-level
methods (``kind = 'gradient'``, :mod:`.gradient`, updated by
:func:`balanced_update`): :class:`PCGrad`, :class:`MGDA`, :class:`CAGrad`,
:class:`AlignedMTL`, :class:`UPGrad`. The runner adds
:class:`LossBalancerHook` (epoch boundaries) whenever a balancer is set.
"""
from .base import BALANCE_PREFIX, LossBalancer, all_reduce_mean, all_reduce_sum, group_task_losses
from .dwa import DWA
from .famo import FAMO
from .fixed import FixedWeights
from .gradient import (GRADIENT_BALANCERS, CAGrad, AlignedMTL, GradientBalancer, MGDA, PCGrad, UPGrad,
                       is_gradient_balancer)
from .gradient_step import balanced_update
from .hook import LossBalancerHook
from .uncertainty import UncertaintyWeighting

__all__ = ['BALANCE_PREFIX', 'DWA', 'FAMO', 'GRADIENT_BALANCERS', 'AlignedMTL', 'CAGrad', 'FixedWeights',
           'GradientBalancer', 'LossBalancer', 'LossBalancerHook', 'MGDA', 'PCGrad', 'UPGrad',
           'UncertaintyWeighting', 'all_reduce_mean', 'all_reduce_sum', 'balanced_update', 'group_task_losses',
           'is_gradient_balancer']
