"""1-D CPAB (continuous piecewise-affine velocity) diffeomorphisms, difw-compatible.

See :class:`CPAB1D` and ``docs/method.md`` §3 for the conventions.
"""
from .basis import rref_basis
from .transformer import CPAB1D

__all__ = ['CPAB1D', 'rref_basis']
