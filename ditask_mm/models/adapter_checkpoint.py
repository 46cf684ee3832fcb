"""Adapter-only checkpoints: what training changed, without the frozen weights.

A DiTASK model trains a few thousand θ plus some backbone parts (the config's
trainable policy) and the heads; the pretrained weights stay frozen. An
adapter-only checkpoint keeps

* every parameter with ``requires_grad=True`` in the built model, and
* every buffer (state-dict entry) of the heads, the neck and the loss
  balancer: BatchNorm running statistics and a balancer's state change in
  training although they are not parameters,

as ``{'meta': {..., 'kind': 'adapter_only', 'keys': N}, 'state_dict': ...}``
(``tools/model_converters/extract_adapters.py`` writes them).
:func:`load_adapter_checkpoint` puts such a file on top of a model whose
pretrained weights are already loaded (``init_cfg`` pretrained, or a full
checkpoint). Reading files and checking that they fit live in
:mod:`.checkpoint_file` and :mod:`.checkpoint_fit`.
"""
from typing import Dict, Mapping, Optional

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from ..adapters import refresh_svd_caches
from .checkpoint_file import CheckpointContents, checkpoint_contents, read_checkpoint
from .checkpoint_fit import check_checkpoint_fits

#: Top-level submodules whose buffers are saved with the trainable parameters (the heads' BatchNorm
#: statistics; a loss balancer's state, e.g. DWA's epoch averages and FAMO's logits).
HEAD_PREFIXES = ('decode_heads.', 'decode_head.', 'auxiliary_head.', 'neck.', 'loss_balancer.')


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


def check_full_checkpoint(model: nn.Module, path: str, state_dict: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``path`` holds exactly ``model``'s state-dict keys and shapes.

    ``check_checkpoint_fits`` with the full-checkpoint rules (``state_dict``:
    the file's tensors when already read).
    """
    contents = None if state_dict is None else CheckpointContents(path=path, state_dict=dict(state_dict))
    check_checkpoint_fits(model, path, contents, adapter_only=False)


def load_adapter_checkpoint(model: nn.Module, path: str, logger: Optional[MMLogger] = None,
                            checkpoint=None) -> int:
    """Load an adapter-only checkpoint on top of ``model``'s (already loaded) pretrained weights.

    Every tensor of the file must be a state-dict entry of ``model`` with the
    same shape (the adapter-only rules of ``check_checkpoint_fits``); the
    model's other entries are left as they are. Afterwards the backbone's
    DiTASK SVD caches are recomputed.

    Args:
        model: The built model, pretrained weights loaded.
        path: The adapter-only file (any checkpoint whose keys all fit works).
        logger: Where to report; default: the current ``MMLogger``.
        checkpoint: The file's content when already read (a
            ``CheckpointContents`` or the object the file holds; ``path``
            then only names it in messages).

    Returns:
        The number of tensors loaded.

    Raises:
        CheckpointMismatchError: A key the model lacks or a shape mismatch
            (naming key, file and both shapes), or a file with no tensors.
    """
    logger = logger or MMLogger.get_current_instance()
    contents = read_checkpoint(path) if checkpoint is None else checkpoint_contents(checkpoint, path)
    check_checkpoint_fits(model, path, contents, adapter_only=True)
    state_dict = contents.state_dict
    model.load_state_dict(state_dict, strict=False)  # every key was checked above
    refreshed = refresh_svd_caches(model)
    not_covered = [n for n, p in model.named_parameters() if p.requires_grad and n not in state_dict]
    kind = contents.meta.get('kind', 'unknown kind')
    logger.info(f'loaded {len(state_dict)} tensors from {path} ({kind}) on top of the pretrained '
                f'weights; refreshed {refreshed} SVD caches')
    if not_covered:
        logger.warning(f'{len(not_covered)} trainable parameters of the model are not in {path} and keep their '
                       f'current values, e.g. {not_covered[:3]}')
    return len(state_dict)
