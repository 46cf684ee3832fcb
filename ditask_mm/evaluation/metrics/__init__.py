"""Evaluation metrics of multi-task dense prediction (``docs/datasets.md``, Metrics)."""
from .depth import DepthEvaluator
from .edge import EdgeProxyEvaluator
from .edge_ods import NYUD_MAX_DIST, PASCAL_MAX_DIST, EdgeODSEvaluator
from .multitask import MultiTaskMetric, delta_m
from .normals import NormalsEvaluator
from .saliency import IMAGE_THRESHOLDS, POOLED_THRESHOLDS, SaliencyEvaluator
from .segmentation import LabelMapEvaluator

__all__ = [
    'MultiTaskMetric', 'delta_m', 'LabelMapEvaluator', 'SaliencyEvaluator',
    'NormalsEvaluator', 'DepthEvaluator', 'EdgeProxyEvaluator', 'IMAGE_THRESHOLDS', 'POOLED_THRESHOLDS',
    'EdgeODSEvaluator', 'PASCAL_MAX_DIST', 'NYUD_MAX_DIST'
]
