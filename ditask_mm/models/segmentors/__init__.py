"""Segmentors registered in the ``ditask_mm`` scope."""
from .multitask_segmentor import TASK_LOSSES, MultiTaskSegmentor

__all__ = ['MultiTaskSegmentor', 'TASK_LOSSES']
