"""Count a model's parameters by group: adapters (shared and per task), the rest of the backbone, the heads."""
from typing import Any, Dict, List, Optional, Tuple

import torch.nn as nn

from ..adapters import adapter_layers

#: Attributes of a segmentor that hold decode heads.
HEAD_ATTRS = ('decode_heads', 'decode_head', 'auxiliary_head', 'heads')


def split_model(model: nn.Module) -> Tuple[nn.Module, List[nn.Module]]:
    """Return ``(backbone, [head modules])`` of a segmentor, or ``(model, [])`` of a bare backbone."""
    backbone = getattr(model, 'backbone', model)
    heads = [getattr(model, a) for a in HEAD_ATTRS if isinstance(getattr(model, a, None), nn.Module)]
    return backbone, heads


def adapter_group_key(name: str) -> Optional[str]:
    """The task or task-group key of an adapter parameter, or ``None`` for a shared one.

    Args:
        name: The parameter's name within its adapter layer, e.g.
            ``theta_tasks.sal``, ``lora_tasks_A.semseg+human_parts`` or
            ``lora_A``.

    Returns:
        The second part of the name when the first part contains ``tasks``
        (``'sal'``, ``'semseg+human_parts'``; the first part itself if there
        is no second), else ``None``.
    """
    head, _, rest = name.partition('.')
    if 'tasks' not in head:
        return None
    return rest.split('.')[0] if rest else head


def count_parameters(model: nn.Module) -> Dict[str, Any]:
    """Trainable-parameter counts by group.

    An adapter parameter belongs to a task (or a task group) when the first
    part of its name within the adapter layer contains ``tasks``
    (``theta_tasks.sal``, ``lora_tasks_A.semseg+human_parts``); the second
    part is the task or group key (:func:`adapter_group_key`). The other
    adapter parameters (``theta_shared``, ``lora_A``...) are the shared
    adapter.

    Args:
        model: A segmentor (``backbone`` plus heads) or a bare backbone.

    Returns:
        ``adapter_shared``, ``adapter_task``, ``adapter`` (their sum),
        ``other_backbone`` (trainable backbone parameters outside the
        adapters), ``backbone_trainable``, ``decode_heads`` (trainable head
        parameters), ``total_trainable`` and ``total`` (frozen included),
        all ints, and ``adapter_by_group``: ``{task or group key: trainable
        adapter parameters}`` in the order the keys first appear, whose
        values sum to ``adapter_task``.
    """
    backbone, heads = split_model(model)
    adapter_shared = adapter_task = 0
    adapter_by_group: Dict[str, int] = {}
    adapter_ids = set()
    for _, layer in adapter_layers(backbone):
        for name, param in layer.adapter_parameters():
            adapter_ids.add(id(param))
            if not param.requires_grad:
                continue
            key = adapter_group_key(name)
            if key is None:
                adapter_shared += param.numel()
            else:
                adapter_task += param.numel()
                adapter_by_group[key] = adapter_by_group.get(key, 0) + param.numel()
    other = sum(p.numel() for p in backbone.parameters() if p.requires_grad and id(p) not in adapter_ids)
    decode = sum(p.numel() for h in heads for p in h.parameters() if p.requires_grad)
    return dict(adapter_shared=adapter_shared, adapter_task=adapter_task, adapter=adapter_shared + adapter_task,
                other_backbone=other, backbone_trainable=adapter_shared + adapter_task + other,
                decode_heads=decode,
                total_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                total=sum(p.numel() for p in model.parameters()),
                adapter_by_group=adapter_by_group)
