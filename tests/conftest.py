"""Test-suite setup: apply ditask_mm's compat patches before any test module
imports mmseg (with mmcv-lite, ``import mmseg.models`` needs them first)."""
import ditask_mm  # noqa: F401
