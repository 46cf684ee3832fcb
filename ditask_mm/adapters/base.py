"""What every adapted linear layer shares.

An adapter layer takes over a frozen ``nn.Linear``: it adopts the layer's own
``weight`` and ``bias`` parameters (same tensors, same state-dict keys, so a
pretrained checkpoint written for the plain model still loads), freezes them,
and adds a small set of trainable parameters. Subclasses say how the effective
weight is built (:meth:`AdapterLayer.adapted_weight`) and how the forward runs.

Every adapter accepts an optional task name. ``forward(x, task=None)`` uses the
shared (task-agnostic) adaptation; ``forward(x, task='semseg')`` uses that
task's adaptation if the layer has one. ``active_task`` (set with
:func:`ditask_mm.adapters.adapter_task`) is used when no task is passed, which
lets a model whose code knows nothing about tasks run one task's weights.
"""
import abc
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor


class AdapterLayer(nn.Module, metaclass=abc.ABCMeta):
    """Base class of the adapters that replace a frozen ``nn.Linear``.

    Args:
        base_layer: The pretrained linear layer. Its ``weight`` and ``bias``
            are adopted and frozen (``requires_grad=False``).
        tasks: Task names that get a task-specific adaptation. Empty or
            ``None`` for a shared-only layer.

    Attributes:
        in_features (int): Input width, as in ``nn.Linear``.
        out_features (int): Output width.
        tasks (tuple[str]): Tasks with their own adaptation.
        active_task (str | None): Task used when ``forward`` gets none.
    """

    #: Names (relative to the layer) of the parameters an adapter adds.
    adapter_param_prefixes: Tuple[str, ...] = ()
    #: The module type an adapter replaces (checked by ``inject_adapters``).
    wraps = nn.Linear

    def __init__(self, base_layer: nn.Linear, tasks: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f'{type(self).__name__} wraps an nn.Linear, got {type(base_layer).__name__}')
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.weight = base_layer.weight
        self.bias = base_layer.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        tasks = tuple(tasks or ())
        if len(set(tasks)) != len(tasks):
            raise ValueError(f'duplicate task names in {tasks}')
        self.tasks = tasks
        self.active_task: Optional[str] = None

    # ------------------------------------------------------------------ tasks
    def resolve_task(self, task: Optional[str]) -> Optional[str]:
        """Return the task whose adaptation a call should use.

        Args:
            task: Task passed to the call, or ``None`` for :attr:`active_task`.

        Returns:
            The task name if this layer has an adaptation for it, else
            ``None`` (the shared adaptation). A task this layer has no
            transform for falls back to the shared one: only some layers of a
            model are task-specific.
        """
        task = self.active_task if task is None else task
        if task is None or task not in self.tasks:
            return None
        return task

    def check_task(self, task: Optional[str]) -> None:
        """Raise ``KeyError`` if ``task`` is neither ``None`` nor one of :attr:`tasks`."""
        if task is not None and task not in self.tasks:
            raise KeyError(f'{type(self).__name__} has no adaptation for task {task!r}; '
                           f'its tasks are {list(self.tasks)}')

    # ------------------------------------------------------------- parameters
    def adapter_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """Yield ``(name, parameter)`` for the parameters the adapter added."""
        for name, param in self.named_parameters():
            if name.startswith(self.adapter_param_prefixes):
                yield name, param

    # ------------------------------------------------------------------- API
    @abc.abstractmethod
    def adapted_weight(self, task: Optional[str] = None) -> Tensor:
        """The effective weight, ``(out_features, in_features)``, for ``task``."""
        raise NotImplementedError

    @abc.abstractmethod
    def forward(self, x: Tensor, task: Optional[str] = None) -> Tensor:
        """``(..., in_features)`` → ``(..., out_features)`` with ``task``'s adaptation."""
        raise NotImplementedError

    def forward_paths(self, x: Tensor, paths: Sequence[Optional[str]]) -> List[Tensor]:
        """The outputs of several paths (``None``: shared, else a task) for one input ``x``.

        One :meth:`forward` per path; a layer may share work between them
        (``DiTASKLinear`` can give all paths one dropped input).
        """
        return [self(x, task=path) for path in paths]

    @torch.no_grad()
    def merge(self, task: Optional[str] = None) -> nn.Linear:
        """Fold the adaptation for ``task`` into a plain ``nn.Linear``.

        Args:
            task: A task name of this layer, or ``None`` for the shared
                adaptation.

        Returns:
            A new ``nn.Linear`` on the same device, with the dtype of the
            frozen weight, whose output equals this layer's output for
            ``task`` (in eval mode).
        """
        self.check_task(task)
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        linear.weight.copy_(self.adapted_weight(task).to(self.weight.dtype))
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        tasks = f', tasks={list(self.tasks)}' if self.tasks else ''
        return f'in_features={self.in_features}, out_features={self.out_features}{tasks}'


def cast_weight_for(x: Tensor, weight: Tensor) -> Tensor:
    """Cast ``weight`` to ``x``'s dtype unless autocast will choose the dtype."""
    if weight.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
        return weight.to(x.dtype)
    return weight


def adapter_layers(model: nn.Module) -> Iterable[Tuple[str, AdapterLayer]]:
    """Yield ``(qualified name, layer)`` for every adapter layer in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            yield name, module
