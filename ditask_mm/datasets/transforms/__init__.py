"""Transforms for multi-task samples (registered in the ``ditask_mm`` scope).

* loading: :class:`LoadMultiTaskAnnotations` (after mmcv's ``LoadImageFromFile``);
  :class:`ImageToFloat64` keeps the image unrounded through the geometry, and
  ``FixedResizeMTL(image_cast=...)`` casts it back to uint8 (:mod:`.image_cast`);
* geometry: :class:`RandomFlipMTL`, :class:`ScaleRotateMTL`,
  :class:`FixedResizeMTL` (the reference pipeline), :class:`RandomResizeMTL`,
  :class:`RandomCropMTL` (mmseg style);
* :class:`AddIgnoreRegions` after all geometry, then
  :class:`PackMultiTaskInputs`.
"""
from .formatting import PackMultiTaskInputs
from .geometric import FixedResizeMTL, RandomFlipMTL, ScaleRotateMTL
from .ignore_regions import AddIgnoreRegions
from .image_cast import IMAGE_CASTS, ImageToFloat64
from .loading import LoadMultiTaskAnnotations
from .resize_crop import RandomCropMTL, RandomResizeMTL

__all__ = [
    'LoadMultiTaskAnnotations', 'RandomFlipMTL', 'ScaleRotateMTL', 'FixedResizeMTL', 'RandomResizeMTL',
    'RandomCropMTL', 'AddIgnoreRegions', 'PackMultiTaskInputs', 'ImageToFloat64', 'IMAGE_CASTS'
]
