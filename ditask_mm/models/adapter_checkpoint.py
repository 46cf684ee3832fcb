"""Adapter-only checkpoints: what training changed, without the frozen weights.

A DiTASK model trains a few thousand θ plus some backbone parts (the config's
trainable policy) and the heads; the pretrained weights stay frozen. An
adapter-only checkpoint keeps

* every parameter with ``requires_grad=True`` in the built model, and
* every buffer (state-dict entry) of the heads and the neck: BatchNorm
  running statistics change in training although they are not parameters,

as ``{'meta': {..., 'kind': 'adapter_only', 'keys': N}, 'state_dict': ...}``
(``tools/model_converters/extract_adapters.py`` writes them).
:func:`load_adapter_checkpoint` puts such a file on top of a model whose
pretrained weights are already loaded (``init_cfg`` pretrained, or a full
checkpoint).
"""
import os.path as osp
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from .checkpoint_file import CheckpointReadError, load_checkpoint_file  # noqa: F401  (re-exported)

#: ``meta['kind']`` of an adapter-only checkpoint.
ADAPTER_ONLY = 'adapter_only'
#: Top-level submodules whose buffers are saved with the trainable parameters.
HEAD_PREFIXES = ('decode_heads.', 'decode_head.', 'auxiliary_head.', 'neck.')


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit a model (missing or unknown keys, other shapes, no tensors)."""


def split_checkpoint(checkpoint: Any, path: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """``(state_dict, meta)`` of an already-read checkpoint object (see :func:`read_checkpoint`)."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(f'{path}: expected a dict, got {type(checkpoint).__name__}')
    state_dict = checkpoint.get('state_dict', checkpoint.get('model', checkpoint))
    meta = checkpoint.get('meta') or {}
    if not isinstance(state_dict, Mapping):
        raise CheckpointMismatchError(f'{path}: its state_dict is a {type(state_dict).__name__}, not a dict')
    state_dict = {(k[len('module.'):] if k.startswith('module.') else k): v
                  for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    return state_dict, dict(meta) if isinstance(meta, Mapping) else {}


def read_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """``(state_dict, meta)`` of a checkpoint file on the CPU.

    Accepts ``{'state_dict': ...}`` (mmengine, ours), ``{'model': ...}`` or a
    bare state dict; a leading ``module.`` (DDP) is removed. Non-tensor
    entries are dropped.

    Raises:
        CheckpointReadError: The file is missing, empty, truncated or corrupt.
        CheckpointMismatchError: It holds no dict.
    """
    return split_checkpoint(load_checkpoint_file(path), path)


def adapter_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """What an adapter-only checkpoint of ``model`` holds (see the module docstring).

    Returns:
        ``{key: tensor}`` in state-dict order (tensors detached, on their device).
    """
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    state = model.state_dict()
    kept = {k: v for k, v in state.items() if k in trainable or k.startswith(HEAD_PREFIXES)}
    missing = sorted(trainable - set(kept))
    if missing:  # pragma: no cover (a parameter outside the state dict)
        raise RuntimeError(f'trainable parameters missing from the state dict: {missing[:5]}')
    return kept


def _shape(t: torch.Tensor) -> Tuple[int, ...]:
    return tuple(t.shape)


def state_dict_mismatches(model_state: Mapping[str, torch.Tensor],
                          state_dict: Mapping[str, torch.Tensor]) -> Tuple[List[str], List[str], List[str]]:
    """``(missing, unexpected, shape_mismatch)`` keys of ``state_dict`` against ``model_state``.

    ``shape_mismatch`` entries read ``'key: checkpoint (a, b) vs model (c, d)'``.
    """
    missing = [k for k in model_state if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_state]
    shapes = [f'{k}: checkpoint {_shape(v)} vs model {_shape(model_state[k])}'
              for k, v in state_dict.items() if k in model_state and _shape(v) != _shape(model_state[k])]
    return missing, unexpected, shapes


def describe_mismatch(path: str, missing: List[str], unexpected: List[str], shapes: List[str],
                      limit: int = 5) -> str:
    """A readable account of why checkpoint ``path`` does not fit a model (first ``limit`` keys of each kind)."""
    parts = [f'checkpoint {path} does not fit the model built from the config '
             '(another architecture, task set or adapter?):']
    for what, keys in (('size mismatches', shapes), ('keys the model lacks', unexpected),
                       ('model keys the checkpoint lacks', missing)):
        if keys:
            more = f' (+{len(keys) - limit} more)' if len(keys) > limit else ''
            parts.append(f'  {len(keys)} {what}: ' + ', '.join(keys[:limit]) + more)
    return '\n'.join(parts)


def check_full_checkpoint(model: nn.Module, path: str, state_dict: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``path`` holds exactly ``model``'s state-dict keys and shapes."""
    if state_dict is None:
        state_dict, _ = read_checkpoint(path)
    missing, unexpected, shapes = state_dict_mismatches(model.state_dict(), state_dict)
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(describe_mismatch(path, missing, unexpected, shapes))


def refresh_svd_caches(model: nn.Module) -> int:
    """Call ``refresh_svd_caches()`` on the backbone (or the model) if it has one; returns its count."""
    for module in (getattr(model, 'backbone', None), model):
        if module is not None and hasattr(module, 'refresh_svd_caches'):
            return int(module.refresh_svd_caches())
    return 0


def load_adapter_checkpoint(model: nn.Module, path: str, logger: Optional[MMLogger] = None,
                            checkpoint: Optional[Mapping] = None) -> int:
    """Load an adapter-only checkpoint on top of ``model``'s (already loaded) pretrained weights.

    Every tensor of the file must be a state-dict entry of ``model`` with the
    same shape; the model's other entries are left as they are. Afterwards the
    backbone's DiTASK SVD caches are recomputed.

    Args:
        model: The built model, pretrained weights loaded.
        path: The adapter-only file (any checkpoint whose keys all fit works).
        logger: Where to report; default: the current ``MMLogger``.
        checkpoint: The file's content when already read (``path`` then only
            names it in messages).

    Returns:
        The number of tensors loaded.

    Raises:
        CheckpointMismatchError: A key the model lacks or a shape mismatch
            (naming key, file and both shapes), or a file with no tensors.
    """
    logger = logger or MMLogger.get_current_instance()
    state_dict, meta = read_checkpoint(path) if checkpoint is None else split_checkpoint(checkpoint, path)
    if not state_dict:
        raise CheckpointMismatchError(f'adapter checkpoint {path} holds no tensors')
    model_state = model.state_dict()
    for key, value in state_dict.items():
        if key not in model_state:
            raise CheckpointMismatchError(f'adapter checkpoint {path}: key {key!r} (shape {_shape(value)} in the '
                                          'file) is not in the model (another architecture or task set?)')
        if _shape(value) != _shape(model_state[key]):
            raise CheckpointMismatchError(f'adapter checkpoint {path}: key {key!r} has shape {_shape(value)} in the '
                                          f'file but {_shape(model_state[key])} in the model')
    model.load_state_dict(state_dict, strict=False)  # every key was checked above
    refreshed = refresh_svd_caches(model)
    not_covered = [n for n, p in model.named_parameters() if p.requires_grad and n not in state_dict]
    kind = meta.get('kind', 'unknown kind')
    logger.info(f'loaded {len(state_dict)} tensors from {osp.basename(path)} ({kind}) on top of the pretrained '
                f'weights; refreshed {refreshed} SVD caches')
    if not_covered:
        logger.warning(f'{len(not_covered)} trainable parameters of the model are not in {path} and keep their '
                       f'current values, e.g. {not_covered[:3]}')
    return len(state_dict)
