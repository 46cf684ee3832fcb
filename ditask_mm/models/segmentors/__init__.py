"""Segmentors registered in the ``ditask_mm`` scope."""
from .multitask_segmentor import DEFAULT_LOSS_WEIGHTS, DEFAULT_LOSSES, MultiTaskSegmentor

__all__ = ['MultiTaskSegmentor', 'DEFAULT_LOSSES', 'DEFAULT_LOSS_WEIGHTS']
