"""Backbones registered in the ``ditask_mm`` scope."""
from .multitask_swin import (DiTASKSwinTransformer, MTLoRASwinTransformer,
                             MultiTaskSwinTransformer)

__all__ = ['MultiTaskSwinTransformer', 'DiTASKSwinTransformer', 'MTLoRASwinTransformer']
