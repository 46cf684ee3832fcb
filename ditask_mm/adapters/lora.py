"""LoRA: a frozen linear layer plus a trainable low-rank update.

``y = x·Wᵀ + b + s · dropout(x)·Aᵀ·Bᵀ`` with ``A`` (``rank × in``)
kaiming-uniform initialised, ``B`` (``out × rank``) zero, so the layer starts
as the pretrained one. ``s`` is ``alpha / rank`` unless ``scale`` is given.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..registry import MODELS
from .base import AdapterLayer
from .dropout import ByteMaskDropout


def init_lora_pair(A: Tensor, B: Tensor) -> None:
    """Kaiming-uniform ``A`` (a=√5, as ``nn.Linear``) and zero ``B``."""
    nn.init.kaiming_uniform_(A, a=math.sqrt(5))
    nn.init.zeros_(B)


@MODELS.register_module()
class LoRALinear(AdapterLayer):
    """A frozen ``nn.Linear`` with one task-agnostic low-rank update.

    Args:
        base_layer: The pretrained linear layer (frozen, adopted).
        rank: Rank of the update.
        alpha: LoRA alpha; the scale is ``alpha / rank``. Defaults to
            ``rank`` (scale 1).
        scale: Explicit scale, overriding ``alpha``.
        dropout: Dropout on the input of the low-rank branch only.
        tasks: Accepted for interface compatibility; LoRA has no task
            adaptation and must get none (a non-empty value raises).
    """

    adapter_param_prefixes = ('lora_A', 'lora_B')

    def __init__(self,
                 base_layer: nn.Linear,
                 rank: int = 4,
                 alpha: Optional[float] = None,
                 scale: Optional[float] = None,
                 dropout: float = 0.0,
                 tasks: Optional[Sequence[str]] = None) -> None:
        if tasks:
            raise ValueError('LoRALinear is task-agnostic; use MTLoRALinear for task-specific '
                             f'updates (got tasks={list(tasks)})')
        super().__init__(base_layer)
        if rank < 1:
            raise ValueError(f'rank must be >= 1, got {rank}')
        self.rank = rank
        self.scale = float(scale) if scale is not None else float(alpha if alpha is not None else rank) / rank
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, rank, **factory))
        init_lora_pair(self.lora_A, self.lora_B)
        self.lora_dropout = ByteMaskDropout(dropout) if dropout > 0 else nn.Identity()

    def adapted_weight(self, task: Optional[str] = None) -> Tensor:
        """``W + s·B·A``, ``(out_features, in_features)``; ``task`` is ignored."""
        return self.weight + self.scale * (self.lora_B @ self.lora_A)

    def forward(self, x: Tensor, task: Optional[str] = None) -> Tensor:
        """``x·Wᵀ + b + s·dropout(x)·Aᵀ·Bᵀ`` for ``x`` of shape ``(..., in)``."""
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + self.scale * update

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}'
