"""What DiTASK did to a layer's singular values: pretrained σ, adapted σ', the warp φ_θ, the relative change."""
from typing import Dict

import torch

#: Points on [0, 1] at which the warps are sampled.
WARP_POINTS = 201


def spectrum_curves(layer) -> Dict[str, dict]:
    """Every transform of a ``DiTASKLinear`` and what it does to the layer's spectrum.

    Args:
        layer: A ``DiTASKLinear`` with ``num_splits`` row blocks of ``k``
            singular values each.

    Returns:
        ``{'shared' or task: curves}``, where ``curves`` holds ``sigma`` and
        ``sigma_adapted`` (``num_splits × k`` arrays), ``phi`` (the warp on
        ``WARP_POINTS`` points of [0, 1]) and ``rel_change``,
        ‖σ' − σ‖ / ‖σ‖ over all splits (0 for a transform at θ = 0).
    """
    x = torch.linspace(0, 1, WARP_POINTS, dtype=torch.float64)
    with torch.no_grad():
        _, sigma, _ = layer.svd.get(layer.weight)
        sigma = sigma.double()
        curves = {}
        for task, transform, theta in layer.transform_paths():
            adapted = layer.adapted_spectrum(task).double()
            change = torch.linalg.vector_norm(adapted - sigma) / torch.linalg.vector_norm(sigma).clamp_min(1e-300)
            curves['shared' if task is None else task] = dict(
                sigma=sigma.cpu().numpy(), sigma_adapted=adapted.cpu().numpy(),
                phi=transform.transform_points(x.to(theta.device), theta.double()).cpu().numpy(),
                rel_change=float(change))
    return curves
