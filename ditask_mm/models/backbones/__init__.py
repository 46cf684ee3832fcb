"""Backbones registered in the ``ditask_mm`` scope."""
from .adapted_backbone import AdaptedBackbone
from .multitask_swin import (DiTASKSwinTransformer, MTLoRASwinTransformer,
                             MultiTaskSwinTransformer)

__all__ = ['AdaptedBackbone', 'MultiTaskSwinTransformer', 'DiTASKSwinTransformer', 'MTLoRASwinTransformer']
