"""Segmentors registered in the ``ditask_mm`` scope."""
from .multitask_segmentor import DEFAULT_LOSSES, MultiTaskSegmentor

__all__ = ['MultiTaskSegmentor', 'DEFAULT_LOSSES']
