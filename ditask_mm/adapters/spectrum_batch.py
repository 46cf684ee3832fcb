"""Warp the spectra of all DiTASK layers of a model in a few batched CPAB calls.

Each :class:`~ditask_mm.adapters.DiTASKLinear` warps its pretrained spectrum
once per path (shared, and each task) in every training forward. Done layer
by layer, a Swin-T DiTASK model makes 93 CPAB calls per step, each a few
dozen small kernels: about 117k dispatched ops on CPU, and on a GPU a
launch-bound tail far longer than the matrix products it feeds.

Transforms with the same tessellation, boundary condition, spectrum mode and
spectrum length (a Swin-T has eight such groups: four widths times the shared
and the task tessellation) are applied in one call, since the CPAB operator
is vectorised over rows of θ. The CPAB operator computes every row the same
way whatever the batch, so the batched spectra equal the per-layer ones
exactly, and gradients reach each θ through the same graph.

:func:`batched_spectra` is a context manager: inside it, every DiTASK layer
of the module reads its precomputed spectra instead of calling CPAB.
:class:`~ditask_mm.models.segmentors.MultiTaskSegmentor` opens it around the
backbone in ``extract_feat``, the one place it is entered, for every backbone;
it batches when gradients are enabled (in eval without gradients each layer
already caches its adapted weight). Code calling a backbone alone opens it
itself.
"""
import contextlib
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..cpab import CPAB1D
from .ditask import DiTASKLinear

Spectra = Dict[Optional[str], Tensor]


def compute_spectra(layers: Sequence[DiTASKLinear]) -> Dict[DiTASKLinear, Spectra]:
    """Warped spectra of every path of ``layers``, grouped into batched CPAB calls.

    Args:
        layers: DiTASK layers; their SVD caches are refreshed where stale.

    Returns:
        ``{layer: {task or None: σ' of shape (num_splits, k)}}`` for every
        path that has a transform.
    """
    groups: Dict[Tuple, List[Tuple[DiTASKLinear, Optional[str], Tensor, Tensor, CPAB1D]]] = defaultdict(list)
    for layer in layers:
        _, S, _ = layer.svd.get(layer.weight)
        for task, transform, theta in layer.transform_paths():
            key = (transform.tessellation_size, transform.zero_boundary, layer.spectrum_mode, S.shape[-1],
                   S.dtype, S.device)
            groups[key].append((layer, task, S, theta, transform))
    result: Dict[DiTASKLinear, Spectra] = defaultdict(dict)
    for key, members in groups.items():
        mode, transform = key[2], members[0][4]  # equal tessellations: any member's transform serves
        values = torch.cat([S for _, _, S, _, _ in members])
        thetas = torch.cat([theta.expand(S.shape[0], -1) for _, _, S, theta, _ in members])
        if mode == 'resample':
            warped = transform.transform_sequence(values, thetas)
        else:
            vmax = values[:, :1].clamp_min(torch.finfo(values.dtype).tiny)
            warped = transform.transform_values(values, thetas, vmax)
        parts = warped.split([S.shape[0] for _, _, S, _, _ in members])
        for (layer, task, _, _, _), part in zip(members, parts):
            result[layer][task] = part
    return dict(result)


@contextlib.contextmanager
def batched_spectra(module: nn.Module) -> Iterator[int]:
    """Precompute the spectra of ``module``'s DiTASK layers for one forward.

    Does nothing (yields 0) when gradients are disabled, when ``module`` has
    no DiTASK layer, or inside another ``batched_spectra`` of the same layers.

    Args:
        module: Any module containing :class:`DiTASKLinear` layers.

    Yields:
        The number of layers that read precomputed spectra.
    """
    layers = [m for m in module.modules() if isinstance(m, DiTASKLinear)]
    if not torch.is_grad_enabled() or not layers or any(layer.precomputed_spectra is not None for layer in layers):
        yield 0
        return
    spectra = compute_spectra(layers)
    for layer, entry in spectra.items():
        layer.precomputed_spectra = entry
    try:
        yield len(spectra)
    finally:
        for layer in spectra:
            layer.precomputed_spectra = None


def capture_spectra(module: nn.Module) -> Dict[DiTASKLinear, Optional[Spectra]]:
    """The precomputed spectra ``module``'s DiTASK layers read right now (``None`` where none)."""
    return {m: m.precomputed_spectra for m in module.modules() if isinstance(m, DiTASKLinear)}


@contextlib.contextmanager
def use_spectra(captured: Dict[DiTASKLinear, Optional[Spectra]]) -> Iterator[None]:
    """Let layers read the spectra :func:`capture_spectra` returned, then restore theirs.

    Activation checkpointing recomputes a region's forward during the
    backward, after :func:`batched_spectra` has closed; a recomputation that
    warped the spectra again would save tensors the first forward did not.
    Wrapping the checkpointed function in ``use_spectra(captured)`` makes
    both runs read the same spectra.
    """
    previous = {layer: layer.precomputed_spectra for layer in captured}
    for layer, spectra in captured.items():
        layer.precomputed_spectra = spectra
    try:
        yield
    finally:
        for layer, spectra in previous.items():
            layer.precomputed_spectra = spectra
