"""Backbones registered in the ``ditask_mm`` scope."""
from .adapted_backbone import AdaptedBackbone
from .multitask_swin import (DiTASKSwinTransformer, MTLoRASwinTransformer,
                             MultiTaskSwinTransformer)
from .swin_export import SwinExportError, export_official_swin

__all__ = ['AdaptedBackbone', 'MultiTaskSwinTransformer', 'DiTASKSwinTransformer', 'MTLoRASwinTransformer',
           'export_official_swin', 'SwinExportError']
