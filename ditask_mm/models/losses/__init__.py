"""Multi-task pixel losses registered in the ``ditask_mm`` scope.

All return ``loss_weight * loss`` as a 0-dim tensor computed in fp32 (fp64
stays fp64) with autocast disabled, and give exactly 0, still attached to
``pred``, for a batch without valid pixels.
"""
from .balanced_bce import BalancedBCELoss
from .balancers import DWA, FAMO, FixedWeights, LossBalancer, LossBalancerHook, UncertaintyWeighting
from .base import MTLPixelLoss
from .cross_entropy import MTLCrossEntropyLoss
from .regression import DepthL1Loss, NormalsL1Loss

__all__ = ['MTLPixelLoss', 'MTLCrossEntropyLoss', 'BalancedBCELoss', 'NormalsL1Loss', 'DepthL1Loss', 'LossBalancer',
           'FixedWeights', 'UncertaintyWeighting', 'DWA', 'FAMO', 'LossBalancerHook']
