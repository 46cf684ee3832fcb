"""Adapters folded into plain weights, for inference and export.

:class:`MergedTaskLinear` holds one plain weight for the shared path and one
per task, with the adapter layers' ``forward(x, task)`` interface, so a
multi-task backbone keeps its task streams while running no SVD, CPAB or
low-rank branch. :func:`merge_adapters` swaps every adapter layer of a model
for one (exactly: the weights are each layer's ``adapted_weight``).
"""
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..registry import MODELS
from .base import AdapterLayer, adapter_layers, cast_weight_for


@MODELS.register_module()
class MergedTaskLinear(AdapterLayer):
    """Plain weights for the shared path and for each task; nothing trains.

    Args:
        base_layer: Supplies the shared weight and the bias.
        tasks: Tasks with their own weight (initialised to the shared one).
        shared: Accepted for config compatibility with the adapters.
        **unused: Other adapter arguments (tessellation sizes, ranks...) are
            accepted and ignored, so a training config's ``adapter`` dict can
            be switched to ``type='MergedTaskLinear'`` to load a merged
            checkpoint.
    """

    def __init__(self, base_layer: nn.Linear, tasks: Optional[Sequence[str]] = None, shared: bool = True,
                 **unused) -> None:
        super().__init__(base_layer, tasks)
        self.task_weights = nn.ParameterDict(
            {t: nn.Parameter(self.weight.detach().clone(), requires_grad=False) for t in self.tasks})

    def adapted_weight(self, task: Optional[str] = None) -> Tensor:
        """The stored weight of ``task`` (or the shared one)."""
        self.check_task(task)
        return self.weight if task is None else self.task_weights[task]

    def forward(self, x: Tensor, task: Optional[str] = None) -> Tensor:
        task = self.resolve_task(task)
        bias = None if self.bias is None else cast_weight_for(x, self.bias)
        return F.linear(x, cast_weight_for(x, self.adapted_weight(task)), bias)


@torch.no_grad()
def merge_adapters(model: nn.Module) -> Dict[str, MergedTaskLinear]:
    """Replace every adapter layer of ``model`` by its :class:`MergedTaskLinear`, in place.

    The model computes the same outputs afterwards (up to fp32 rounding of
    the rebuilt weights) with no adapter computation. Layers inside
    composite adapters (``DiTASKMultiheadAttention``) are merged where they
    sit.

    Returns:
        ``{qualified name: merged layer}``.
    """
    was_training = model.training
    model.eval()
    merged = {}
    for name, layer in list(adapter_layers(model)):
        if isinstance(layer, MergedTaskLinear):
            continue
        parent_name, _, child = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        shared_has_adapter = getattr(layer, 'theta_shared', True) is not None
        shared_weight = layer.adapted_weight(None) if shared_has_adapter else layer.weight
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                          device=layer.weight.device, dtype=layer.weight.dtype)
        if getattr(parent, 'in_proj', None) is layer and hasattr(parent, 'in_proj_weight'):
            # DiTASKMultiheadAttention saves the fused projection as in_proj_weight
            parent.in_proj_weight.copy_(shared_weight)
            plain.weight = parent.in_proj_weight
            plain.bias = parent.in_proj_bias
        else:
            plain.weight.copy_(shared_weight)
            if layer.bias is not None:
                plain.bias.copy_(layer.bias)
        new = MergedTaskLinear(plain, tasks=layer.tasks)
        for task in layer.tasks:
            new.task_weights[task].copy_(layer.adapted_weight(task).to(new.weight.dtype))
        new.active_task = layer.active_task
        setattr(parent, child, new)
        merged[name] = new
    model.train(was_training)
    return merged
