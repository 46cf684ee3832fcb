"""Numerical precision helpers shared by the CPAB operator, the SVD cache and the losses.

SVD, CPAB integration and the losses run in fp32 (fp64 stays fp64) even under
automatic mixed precision; :func:`autocast_disabled` is the one way the package
turns autocast off around them, and :func:`compute_dtype` the one rule for the
dtype they compute in.
"""
import contextlib
from typing import ContextManager

import torch

#: Dtypes that are upcast to fp32 before SVD, CPAB or a loss.
LOW_PRECISION = (torch.float16, torch.bfloat16)


def autocast_disabled(device: torch.device) -> ContextManager:
    """A context in which autocast is off for ``device``'s type.

    A no-op context for device types without autocast support, so the same
    code runs on CPU, CUDA and any other backend.

    Args:
        device: The device (or anything with a ``type`` attribute) of the
            tensors computed inside.
    """
    device_type = torch.device(device).type if not hasattr(device, 'type') else device.type
    is_available = getattr(torch.amp, 'is_autocast_available', None)  # torch >= 2.4
    supported = is_available(device_type) if is_available else device_type in ('cpu', 'cuda')
    if not supported:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp16/bf16 inputs; fp32 and fp64 are kept as they are."""
    return torch.float32 if dtype in LOW_PRECISION else dtype
