"""MTLoRA: task-agnostic plus task-specific low-rank updates.

As in the public MTLoRA code (``docs/method.md`` §11):

* TA-LoRA (shared): ``y = x·Wᵀ + b + s · dropout(x)·A_sᵀ·B_sᵀ`` with the
  scale used directly (``SHARED_SCALE = 4.0``, not ``alpha / rank``).
* TS-LoRA (task ``t``): ``y_t = x_shared·Wᵀ + b + s_t · x_t·A_tᵀ·B_tᵀ``. The
  frozen path reads the **shared** input even when the task stream differs
  (``shared_input``), and the task path excludes the shared update.
"""
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..registry import MODELS
from .base import AdapterLayer
from .dropout import ByteMaskDropout
from .lora import init_lora_pair


@MODELS.register_module()
class MTLoRALinear(AdapterLayer):
    """A frozen ``nn.Linear`` with a shared and per-task low-rank updates.

    Args:
        base_layer: The pretrained linear layer (frozen, adopted).
        rank: Rank of the shared (task-agnostic) update; 0 for none.
        tasks: Tasks with their own update.
        task_rank: Rank of each task update (int, or ``{task: int}``).
        shared_scale: Scale of the shared update (public: 4.0).
        task_scale: Scale of each task update (public: 4.0).
        dropout: Dropout on the input of the shared low-rank branch
            (public: 0.05).
        shared: Whether the layer has a shared update (``False`` is the same
            as ``rank=0``), for layers whose shared output nothing reads.
    """

    adapter_param_prefixes = ('lora_shared_A', 'lora_shared_B', 'lora_tasks_A.', 'lora_tasks_B.')

    def __init__(self,
                 base_layer: nn.Linear,
                 rank: int = 64,
                 tasks: Optional[Sequence[str]] = None,
                 task_rank: Union[int, Mapping[str, int]] = 4,
                 shared_scale: float = 4.0,
                 task_scale: float = 4.0,
                 dropout: float = 0.05,
                 shared: bool = True) -> None:
        super().__init__(base_layer, tasks)
        rank = rank if shared else 0
        if rank < 0:
            raise ValueError(f'rank must be >= 0, got {rank}')
        if rank == 0 and not self.tasks:
            raise ValueError('an MTLoRALinear with rank=0 needs at least one task')
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        self.rank = rank
        self.shared_scale = float(shared_scale)
        self.task_scale = float(task_scale)
        if rank > 0:
            self.lora_shared_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
            self.lora_shared_B = nn.Parameter(torch.empty(self.out_features, rank, **factory))
            init_lora_pair(self.lora_shared_A, self.lora_shared_B)
        else:
            self.register_parameter('lora_shared_A', None)
            self.register_parameter('lora_shared_B', None)
        self.lora_tasks_A = nn.ParameterDict()
        self.lora_tasks_B = nn.ParameterDict()
        for task in self.tasks:
            r = int(task_rank[task]) if isinstance(task_rank, Mapping) else int(task_rank)
            self.lora_tasks_A[task] = nn.Parameter(torch.empty(r, self.in_features, **factory))
            self.lora_tasks_B[task] = nn.Parameter(torch.empty(self.out_features, r, **factory))
            init_lora_pair(self.lora_tasks_A[task], self.lora_tasks_B[task])
        self.lora_dropout = ByteMaskDropout(dropout) if dropout > 0 else nn.Identity()

    def adapted_weight(self, task: Optional[str] = None) -> Tensor:
        """Effective weight: ``W + s·B_s·A_s`` (shared) or ``W + s_t·B_t·A_t`` (task)."""
        self.check_task(task)
        if task is not None:
            return self.weight + self.task_scale * (self.lora_tasks_B[task] @ self.lora_tasks_A[task])
        if self.lora_shared_A is None:
            return self.weight
        return self.weight + self.shared_scale * (self.lora_shared_B @ self.lora_shared_A)

    def forward(self, x: Tensor, task: Optional[str] = None, shared_input: Optional[Tensor] = None) -> Tensor:
        """Apply the shared or a task path.

        Args:
            x: Input, ``(..., in_features)``; the task stream for a task call.
            task: Task to use; ``None`` uses :attr:`active_task`, and a task
                this layer has no update for uses the shared path.
            shared_input: For a task call, the shared-stream input that the
                frozen path reads (public MTLoRA behaviour). Defaults to ``x``.

        Returns:
            ``(..., out_features)``.
        """
        task = self.resolve_task(task)
        if task is None:
            out = F.linear(x, self.weight, self.bias)
            if self.lora_shared_A is not None:
                update = F.linear(F.linear(self.lora_dropout(x), self.lora_shared_A), self.lora_shared_B)
                out = out + self.shared_scale * update
            return out
        frozen_in = x if shared_input is None else shared_input
        update = F.linear(F.linear(x, self.lora_tasks_A[task]), self.lora_tasks_B[task])
        return F.linear(frozen_in, self.weight, self.bias) + self.task_scale * update

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, rank={self.rank}, shared_scale={self.shared_scale:g}, '
                f'task_scale={self.task_scale:g}')
