"""Put adapters into a model, choose what trains, and pick a task.

* :func:`inject_adapters` replaces the ``nn.Linear`` modules an
  :class:`AdapterConfig` selects with adapter layers.
* :func:`set_trainable` freezes a model except the adapters' parameters and
  the parameters whose names match given patterns.
* :func:`adapter_task` makes every adapter use one task's transform inside a
  ``with`` block, for models whose forward knows nothing about tasks.
"""
import re
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Union

import torch.nn as nn
from mmengine.logging import MMLogger, print_log

from ..registry import MODELS
from .base import AdapterLayer, adapter_layers
from .config import AdapterConfig


def _adapter_class(type_: Union[str, type]) -> type:
    """The adapter class for a config ``type``; it must say what it wraps."""
    cls = MODELS.get(type_) if isinstance(type_, str) else type_
    if cls is None or not (isinstance(cls, type) and isinstance(getattr(cls, 'wraps', None), type)):
        raise KeyError(f'{type_!r} is not a registered adapter layer type (e.g. DiTASKLinear, '
                       'LoRALinear, MTLoRALinear, DiTASKMultiheadAttention)')
    return cls


def inject_adapters(model: nn.Module,
                    config: Union[AdapterConfig, Mapping[str, Any]]) -> Dict[str, nn.Module]:
    """Replace the linear layers selected by ``config`` with adapters, in place.

    Args:
        model: Any ``nn.Module``; its pretrained weights may be loaded before
            or after (adapters keep the original ``weight``/``bias`` keys).
        config: An :class:`AdapterConfig` or a dict with its fields.

    Returns:
        ``{qualified name: adapter layer}`` for every replaced module.

    Raises:
        TypeError: If a selected module is not what the adapter wraps (an
            ``nn.Linear``, or ``nn.MultiheadAttention`` for
            :class:`DiTASKMultiheadAttention`).
        ValueError: If nothing matches, if a target pattern matches nothing
            (unless ``allow_unmatched``), or if a selected linear is one whose
            ``forward`` its parent never calls (``nn.MultiheadAttention``'s
            ``out_proj``), where an adapter would silently do nothing.
    """
    config = AdapterConfig.build(config)
    modules = dict(model.named_modules())
    names = [n for n in modules if n]
    targets = [n for n in names if config.is_target(n)]
    if not targets:
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)][:8]
        raise ValueError(f'no module of {type(model).__name__} matches target_modules '
                         f'{list(config.target_modules)}; some of its nn.Linear names: {linears}')
    unmatched = config.unmatched_patterns(names)
    if unmatched and not config.allow_unmatched:
        raise ValueError(f'target_modules patterns {unmatched} match no module of '
                         f'{type(model).__name__} (set allow_unmatched=True if intended)')
    replaced: Dict[str, nn.Module] = {}
    for name in targets:
        module = modules[name]
        args = config.arguments_for(name)
        cls = _adapter_class(args.pop('type'))
        if isinstance(module, AdapterLayer) or getattr(type(module), 'wraps', None) is not None:
            raise TypeError(f'{name} is already adapted ({type(module).__name__})')
        if not isinstance(module, cls.wraps):
            torch_nn = cls.wraps.__module__.startswith('torch.nn')
            wraps = f'nn.{cls.wraps.__name__}' if torch_nn else cls.wraps.__qualname__
            raise TypeError(f'target {name} is a {type(module).__name__}, not the {wraps} that '
                            f'{cls.__name__} wraps; narrow target_modules')
        parent_name, _, child = name.rpartition('.')
        parent = modules[parent_name] if parent_name else model
        if isinstance(parent, nn.MultiheadAttention):
            raise ValueError(f'{name} belongs to nn.MultiheadAttention, whose forward reads its '
                             'weights directly and would bypass an adapter; adapt the attention '
                             'module itself with DiTASKMultiheadAttention')
        adapter = cls(module, **args)
        setattr(parent, child, adapter)
        replaced[name] = adapter
    num_new = sum(p.numel() for a in replaced.values() for _, layer in adapter_layers(a)
                  for _, p in layer.adapter_parameters())
    kinds = sorted({type(a).__name__ for a in replaced.values()})
    print_log(f'[ditask_mm] adapted {len(replaced)} linear layers of {type(model).__name__} '
              f'with {"/".join(kinds)}: {num_new:,} adapter parameters',
              logger=MMLogger.get_current_instance())
    return replaced


def set_trainable(model: nn.Module,
                  trainable: Sequence[str] = (),
                  adapters: bool = True) -> Dict[str, int]:
    """Freeze ``model`` except adapter parameters and named extras.

    ``requires_grad`` flags are not touched by ``model.train()``/``eval()``,
    so the policy survives mode switches.

    Args:
        model: The model, adapters already injected.
        trainable: Regular expressions (``re.search`` on qualified parameter
            names) of further parameters to train, e.g. ``[r'\\bnorm']``.
            The frozen weight and bias inside an adapter layer never match.
        adapters: Whether the adapters' own parameters train.

    Returns:
        Counts: ``trainable`` and ``total`` parameters, ``adapter`` (adapter
        parameters that train) and ``other`` (the rest that train).

    Raises:
        ValueError: If a pattern in ``trainable`` matches no parameter.
    """
    frozen_inside_adapters = set()  # parameter ids: a weight may be shared under two names
    adapter_params = set()
    for _, layer in adapter_layers(model):
        frozen_inside_adapters.update(id(p) for p in (layer.weight, layer.bias) if p is not None)
        adapter_params.update(id(p) for _, p in layer.adapter_parameters())
    patterns = [re.compile(p) for p in trainable]
    hits = {p.pattern: 0 for p in patterns}
    counts = dict(trainable=0, total=0, adapter=0, other=0)
    for name, param in model.named_parameters():
        train = False
        if id(param) in adapter_params:
            train = adapters
        elif id(param) not in frozen_inside_adapters:
            for pattern in patterns:
                if pattern.search(name):
                    hits[pattern.pattern] += 1
                    train = True
        param.requires_grad_(train)
        counts['total'] += param.numel()
        if train:
            counts['trainable'] += param.numel()
            counts['adapter' if id(param) in adapter_params else 'other'] += param.numel()
    unused = [p for p, n in hits.items() if n == 0]
    if unused:
        raise ValueError(f'trainable patterns {unused} match no parameter of {type(model).__name__}')
    return counts


@contextmanager
def adapter_task(model: nn.Module, task: Optional[str]) -> Iterator[None]:
    """Make every adapter in ``model`` use ``task`` when called without one.

    Layers without a transform for ``task`` keep using their shared one.

    Args:
        model: A model with adapter layers.
        task: A task that at least one adapter layer knows, or ``None``.

    Raises:
        KeyError: If no adapter layer of the model has ``task``.
    """
    layers = [layer for _, layer in adapter_layers(model)]
    if task is not None and not any(task in layer.tasks for layer in layers):
        known = sorted({t for layer in layers for t in layer.tasks})
        raise KeyError(f'no adapter layer of {type(model).__name__} has task {task!r}; '
                       f'known tasks: {known}')
    previous = [layer.active_task for layer in layers]
    for layer in layers:
        layer.active_task = task
    try:
        yield
    finally:
        for layer, old in zip(layers, previous):
            layer.active_task = old
