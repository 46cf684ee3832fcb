"""Multi-task loss balancers: how the per-task losses are weighted each step.

``model.loss_balancer`` of :class:`~ditask_mm.models.segmentors.MultiTaskSegmentor`
selects one (none: the configured loss weights, as :class:`FixedWeights`).
Loss-level methods (``kind = 'loss'``): :class:`FixedWeights`,
:class:`UncertaintyWeighting`, :class:`DWA`, :class:`FAMO`. Balancers with
epoch-level state need :class:`LossBalancerHook` in ``custom_hooks``.
"""
from .base import BALANCE_PREFIX, LossBalancer, all_reduce_mean, all_reduce_sum
from .dwa import DWA
from .famo import FAMO
from .fixed import FixedWeights
from .hook import LossBalancerHook
from .uncertainty import UncertaintyWeighting

__all__ = ['BALANCE_PREFIX', 'DWA', 'FAMO', 'FixedWeights', 'LossBalancer', 'LossBalancerHook', 'UncertaintyWeighting',
           'all_reduce_mean', 'all_reduce_sum']
