"""Decode heads registered in the ``ditask_mm`` scope."""
from .hrnet_mtl_head import MTLHRNetHead

__all__ = ['MTLHRNetHead']
