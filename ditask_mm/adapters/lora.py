"""LoRA: a frozen linear layer plus trainable low-rank updates.

Shared path: ``y = x·Wᵀ + b + s · dropout(x)·Aᵀ·Bᵀ`` with ``A`` (``rank × in``)
kaiming-uniform initialised and ``B`` (``out × rank``) zero, so the layer
starts as the pretrained one. ``s`` is ``alpha / rank`` unless ``scale`` is
given.

With ``tasks``, every task key (a task name, or a task group's key such as
``'semseg+human_parts'``) gets its own pair ``A_t``, ``B_t`` of the same rank,
scale and initialisation. Its path is
``y_t = x·Wᵀ + b + s · dropout(x)·A_tᵀ·B_tᵀ``: the task pair *replaces* the
shared one on that path (as MTLoRA's task path does, and as the own adapter
of a network branched per task), it is not added on top. ``shared=False``
builds no shared pair, for a layer whose shared output nothing reads; its
shared path is then the frozen layer.
"""
import math
from typing import Optional, Sequence, Tuple

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
    """A frozen ``nn.Linear`` with a shared and, optionally, per-task low-rank updates.

    Args:
        base_layer: The pretrained linear layer (frozen, adopted).
        rank: Rank of every update (shared and per task).
        alpha: LoRA alpha; the scale is ``alpha / rank``. Defaults to
            ``rank`` (scale 1).
        scale: Explicit scale, overriding ``alpha``.
        dropout: Dropout on the input of the low-rank branch only (every
            path).
        tasks: Task or task-group keys with their own pair
            (``lora_tasks_A[key]``, ``lora_tasks_B[key]``). ``None`` or empty
            for the task-agnostic LoRA.
        shared: Whether the layer has the shared pair (``lora_A``,
            ``lora_B``). ``False`` needs at least one task.

    Raises:
        ValueError: If ``rank < 1``, or ``shared=False`` without tasks.
    """

    adapter_param_prefixes = ('lora_A', 'lora_B', 'lora_tasks_A.', 'lora_tasks_B.')

    def __init__(self,
                 base_layer: nn.Linear,
                 rank: int = 4,
                 alpha: Optional[float] = None,
                 scale: Optional[float] = None,
                 dropout: float = 0.0,
                 tasks: Optional[Sequence[str]] = None,
                 shared: bool = True) -> None:
        super().__init__(base_layer, tasks)
        if rank < 1:
            raise ValueError(f'LoRALinear rank must be >= 1, got {rank}')
        if not shared and not self.tasks:
            raise ValueError('a LoRALinear with shared=False needs at least one task (pass tasks=[...], '
                             'or keep shared=True)')
        self.rank = rank
        self.scale = float(scale) if scale is not None else float(alpha if alpha is not None else rank) / rank
        self.shared = bool(shared)
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        if shared:
            self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
            self.lora_B = nn.Parameter(torch.empty(self.out_features, rank, **factory))
            init_lora_pair(self.lora_A, self.lora_B)
        else:
            self.register_parameter('lora_A', None)
            self.register_parameter('lora_B', None)
        self.lora_tasks_A = nn.ParameterDict()
        self.lora_tasks_B = nn.ParameterDict()
        for task in self.tasks:
            self.lora_tasks_A[task] = nn.Parameter(torch.empty(rank, self.in_features, **factory))
            self.lora_tasks_B[task] = nn.Parameter(torch.empty(self.out_features, rank, **factory))
            init_lora_pair(self.lora_tasks_A[task], self.lora_tasks_B[task])
        self.lora_dropout = ByteMaskDropout(dropout) if dropout > 0 else nn.Identity()

    def _pair(self, task: Optional[str]) -> Optional[Tuple[Tensor, Tensor]]:
        """``(A, B)`` of a resolved path (``None``: shared), or ``None`` when the path has no pair."""
        if task is not None:
            return self.lora_tasks_A[task], self.lora_tasks_B[task]
        if self.lora_A is None:
            return None
        return self.lora_A, self.lora_B

    def adapted_weight(self, task: Optional[str] = None) -> Tensor:
        """``W + s·B·A`` of the shared path or of ``task``'s pair, ``(out_features, in_features)``.

        Without a shared pair, the shared path's weight is the frozen ``W``.

        Raises:
            KeyError: If ``task`` is not one of :attr:`tasks`.
        """
        self.check_task(task)
        pair = self._pair(task)
        if pair is None:
            return self.weight
        A, B = pair
        return self.weight + self.scale * (B @ A)

    def forward(self, x: Tensor, task: Optional[str] = None) -> Tensor:
        """Apply the shared or a task path.

        Args:
            x: Input, ``(..., in_features)``.
            task: Task key to use; ``None`` uses :attr:`active_task`, and a
                task this layer has no pair for uses the shared path.

        Returns:
            ``x·Wᵀ + b + s·dropout(x)·Aᵀ·Bᵀ`` with the path's pair, shape
            ``(..., out_features)``.
        """
        out = F.linear(x, self.weight, self.bias)
        pair = self._pair(self.resolve_task(task))
        if pair is None:
            return out
        A, B = pair
        return out + self.scale * F.linear(F.linear(self.lora_dropout(x), A), B)

    def extra_repr(self) -> str:
        shared = '' if self.shared else ', shared=False'
        return f'{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}{shared}'
