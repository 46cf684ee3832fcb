"""Whether a checkpoint fits a model: one comparison, one decision, one set of messages.

* :func:`compare_state_dicts` lists what differs between a checkpoint's state
  dict and a model's: the model keys the checkpoint lacks, the checkpoint keys
  the model lacks, and the shared keys whose shapes differ. The Swin
  pretrained loader sorts its tensors with it too.
* :func:`check_checkpoint_fits` decides, with the rules of the checkpoint's
  kind, and raises :class:`CheckpointMismatchError` with a message that names
  the file and the keys:

  - a **full** checkpoint must hold every model key with the model's shape,
    and nothing else, except a loss balancer's state (``loss_balancer.``
    keys): a checkpoint trained without the config's balancer (or with one
    the config does not set) still fits, with one WARNING; the balancer then
    starts from its initial state (or the checkpoint's is ignored);
  - an **adapter-only** checkpoint (``meta.kind == 'adapter_only'``) may leave
    model keys out (the frozen weights), but every key it holds must be a
    model key with the model's shape;
  - either must hold at least one tensor.
"""
import logging
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple

import torch
from mmengine.logging import print_log
from torch import nn

#: ``meta['kind']`` of an adapter-only checkpoint.
ADAPTER_ONLY = 'adapter_only'
#: ``(name, checkpoint shape, model shape)`` of a tensor whose shapes differ.
ShapeMismatch = Tuple[str, Tuple[int, ...], Tuple[int, ...]]
#: Keys of a loss balancer's state (``MultiTaskSegmentor.loss_balancer``), which a full checkpoint may lack or add.
BALANCER_PREFIX = 'loss_balancer.'
#: Appended to the message of a full checkpoint that does not fit.
FULL_CHECKPOINT_ADVICE = 'Use the config the checkpoint was trained with, or convert the checkpoint.'


class CheckpointMismatchError(ValueError, RuntimeError):
    """A checkpoint does not fit a model (missing or unknown keys, other shapes, no tensors).

    A ``ValueError`` (what the adapter loader always raised) and a
    ``RuntimeError`` (what the runner's check raised), so callers of either keep working.
    """


@dataclass
class StateDictComparison:
    """How a checkpoint's state dict differs from a model's.

    Attributes:
        missing: Model keys the checkpoint lacks, in the model's order.
        unexpected: Checkpoint keys the model lacks, in the checkpoint's order.
        shape_mismatches: ``(key, checkpoint shape, model shape)`` of the
            shared keys whose shapes differ, in the checkpoint's order.
    """
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatches: List[ShapeMismatch] = field(default_factory=list)

    def shape_lines(self) -> List[str]:
        """``'key: checkpoint (a, b) vs model (c, d)'`` for every shape mismatch."""
        return [f'{key}: checkpoint {ckpt} vs model {model}' for key, ckpt, model in self.shape_mismatches]


def compare_state_dicts(model_state: Mapping[str, torch.Tensor],
                        state_dict: Mapping[str, torch.Tensor]) -> StateDictComparison:
    """Compare a checkpoint's ``state_dict`` with ``model_state`` (a model's state dict).

    Args:
        model_state: ``{name: tensor}`` of the model.
        state_dict: ``{name: tensor}`` of the checkpoint.

    Returns:
        The missing and unexpected keys and the shape mismatches.
    """
    comparison = StateDictComparison()
    comparison.missing = [k for k in model_state if k not in state_dict]
    for key, value in state_dict.items():
        if key not in model_state:
            comparison.unexpected.append(key)
        elif tuple(value.shape) != tuple(model_state[key].shape):
            comparison.shape_mismatches.append((key, tuple(value.shape), tuple(model_state[key].shape)))
    return comparison


def describe_mismatch(path: str, comparison: StateDictComparison, limit: int = 5) -> str:
    """A readable account of why checkpoint ``path`` does not fit a model (first ``limit`` keys of each kind)."""
    parts = [f'checkpoint {path} does not fit the model built from the config '
             '(another architecture, task set or adapter?):']
    for what, keys in (('size mismatches', comparison.shape_lines()), ('keys the model lacks', comparison.unexpected),
                       ('model keys the checkpoint lacks', comparison.missing)):
        if keys:
            more = f' (+{len(keys) - limit} more)' if len(keys) > limit else ''
            parts.append(f'  {len(keys)} {what}: ' + ', '.join(keys[:limit]) + more)
    return '\n'.join(parts)


def _adapter_problem(path: str, state_dict: Mapping[str, torch.Tensor], comparison: StateDictComparison) -> str:
    """The message for the first key of an adapter-only file (in file order) that does not fit."""
    unexpected = set(comparison.unexpected)
    shapes = {key: (ckpt, model) for key, ckpt, model in comparison.shape_mismatches}
    problems = len(unexpected) + len(shapes)
    key = next(k for k in state_dict if k in unexpected or k in shapes)
    if key in unexpected:
        message = (f'adapter checkpoint {path}: key {key!r} (shape {tuple(state_dict[key].shape)} in the file) is '
                   'not in the model (another architecture or task set?)')
    else:
        ckpt, model = shapes[key]
        message = f'adapter checkpoint {path}: key {key!r} has shape {ckpt} in the file but {model} in the model'
    return message + (f' ({problems - 1} more keys do not fit)' if problems > 1 else '')


def check_checkpoint_fits(model: nn.Module, filename: str, checkpoint: Optional[Any] = None,
                          adapter_only: Optional[bool] = None) -> None:
    """Raise :class:`CheckpointMismatchError` unless checkpoint ``filename`` fits ``model``.

    Args:
        model: The built model (a DDP wrapper is unwrapped).
        filename: The checkpoint file; read when ``checkpoint`` is None, else
            only named in messages.
        checkpoint: Its content when already read: a
            :class:`~ditask_mm.models.checkpoint_file.CheckpointContents` or
            the object the file holds.
        adapter_only: Apply the adapter-only rules (True) or the full ones
            (False); default: as the checkpoint's ``meta.kind`` says.

    Raises:
        CheckpointMismatchError: See the module docstring; the message names
            the file and the offending keys with both shapes.
        CheckpointReadError: The file cannot be read (when ``checkpoint`` is None).
    """
    from .checkpoint_file import checkpoint_contents, read_checkpoint
    contents = read_checkpoint(filename) if checkpoint is None else checkpoint_contents(checkpoint, filename)
    if adapter_only is None:
        adapter_only = contents.meta.get('kind') == ADAPTER_ONLY
    state_dict = contents.state_dict
    if not state_dict:
        what = 'adapter checkpoint' if adapter_only else 'checkpoint'
        raise CheckpointMismatchError(f'{what} {filename} holds no tensors; expected a state_dict of this model')
    module = getattr(model, 'module', model)
    comparison = compare_state_dicts(module.state_dict(), state_dict)
    if adapter_only:
        if comparison.unexpected or comparison.shape_mismatches:
            raise CheckpointMismatchError(_adapter_problem(filename, state_dict, comparison))
        return
    balancer_missing = [k for k in comparison.missing if k.startswith(BALANCER_PREFIX)]
    balancer_unexpected = [k for k in comparison.unexpected if k.startswith(BALANCER_PREFIX)]
    if (len(balancer_missing) < len(comparison.missing) or len(balancer_unexpected) < len(comparison.unexpected)
            or comparison.shape_mismatches):
        raise CheckpointMismatchError(describe_mismatch(filename, comparison) + '\n' + FULL_CHECKPOINT_ADVICE)
    if balancer_missing:
        print_log(f'checkpoint {filename} holds no state for the loss balancer '
                  f'({type(getattr(module, "loss_balancer", None)).__name__}; {balancer_missing}): trained without '
                  'it; the balancer starts from its initial state', logger='current', level=logging.WARNING)
    if balancer_unexpected:
        print_log(f'checkpoint {filename} holds loss-balancer state {balancer_unexpected} that this model has no '
                  'place for (model.loss_balancer differs from the training config): ignored', logger='current',
                  level=logging.WARNING)
