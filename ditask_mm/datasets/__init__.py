"""PASCAL_MT and NYUD_MT multi-task datasets, their loading transforms and a synthetic generator.

Importing this package registers :class:`PascalContextMTLDataset`,
:class:`NYUDMTLDataset` (``DATASETS``) and the transforms of
:mod:`ditask_mm.datasets.transforms` (``TRANSFORMS``) in the ``ditask_mm``
scope. See docs/datasets.md.
"""
from . import transforms  # noqa: F401  (registers the transforms)
from .base_multitask import BaseMultiTaskDataset
from .nyud_mtl import NYUDMTLDataset
from .pascal_context_mtl import PascalContextMTLDataset
from .pascal_parts import MalformedFileError
from .sample_errors import CorruptImageError, SampleErrorsMixin, SkippedSampleError
from .tree_check import DatasetTreeError, TreeReport, check_dataset_tree

__all__ = ['BaseMultiTaskDataset', 'CorruptImageError', 'DatasetTreeError', 'MalformedFileError', 'NYUDMTLDataset',
           'PascalContextMTLDataset', 'SampleErrorsMixin', 'SkippedSampleError', 'TreeReport', 'check_dataset_tree',
           'transforms']
