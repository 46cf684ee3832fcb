"""Count a model's parameters by group: adapters (shared and per task), the rest of the backbone, the heads."""
from typing import Dict, List, Tuple

import torch.nn as nn

from ..adapters import adapter_layers

#: Attributes of a segmentor that hold decode heads.
HEAD_ATTRS = ('decode_heads', 'decode_head', 'auxiliary_head', 'heads')


def split_model(model: nn.Module) -> Tuple[nn.Module, List[nn.Module]]:
    """Return ``(backbone, [head modules])`` of a segmentor, or ``(model, [])`` of a bare backbone."""
    backbone = getattr(model, 'backbone', model)
    heads = [getattr(model, a) for a in HEAD_ATTRS if isinstance(getattr(model, a, None), nn.Module)]
    return backbone, heads


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Trainable-parameter counts by group.

    An adapter parameter belongs to a task when the first part of its name
    within the adapter layer contains ``tasks`` (``theta_tasks.sal``,
    ``lora_A_tasks...``), else to the shared adapter.

    Args:
        model: A segmentor (``backbone`` plus heads) or a bare backbone.

    Returns:
        ``adapter_shared``, ``adapter_task``, ``adapter`` (their sum),
        ``other_backbone`` (trainable backbone parameters outside the
        adapters), ``backbone_trainable``, ``decode_heads`` (trainable head
        parameters), ``total_trainable`` and ``total`` (frozen included).
    """
    backbone, heads = split_model(model)
    adapter_shared = adapter_task = 0
    adapter_ids = set()
    for _, layer in adapter_layers(backbone):
        for name, param in layer.adapter_parameters():
            adapter_ids.add(id(param))
            if param.requires_grad:
                if 'tasks' in name.split('.')[0]:
                    adapter_task += param.numel()
                else:
                    adapter_shared += param.numel()
    other = sum(p.numel() for p in backbone.parameters() if p.requires_grad and id(p) not in adapter_ids)
    decode = sum(p.numel() for h in heads for p in h.parameters() if p.requires_grad)
    return dict(adapter_shared=adapter_shared, adapter_task=adapter_task, adapter=adapter_shared + adapter_task,
                other_backbone=other, backbone_trainable=adapter_shared + adapter_task + other,
                decode_heads=decode,
                total_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                total=sum(p.numel() for p in model.parameters()))
