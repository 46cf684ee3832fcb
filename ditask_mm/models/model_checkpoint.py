"""Put any checkpoint of ours on a built model: full, or adapter-only on top of the pretrained weights.

An adapter-only checkpoint (``tools/model_converters/extract_adapters.py``)
holds what training changed, not the frozen pretrained weights. Loading it on
a freshly built model is only right once those weights are in place, and
mmengine's ``Runner.test()`` never calls ``init_weights()``: the frozen
weights would keep PyTorch's default initialisation and every metric would be
wrong with no error. :func:`load_model_checkpoint` therefore

1. loads the pretrained weights named by the config
   (``model.backbone.init_cfg``) when the model has not been initialised yet,
   and fails, naming the file needed, when the config names none or the file
   is missing;
2. checks, when the adapter file records it, that the frozen weights now in
   the model are the ones the adapters were trained on (a per-tensor sum and
   sum of squares, :func:`frozen_digest`);
3. loads the adapter tensors on top.

A full checkpoint must fit the model exactly and is loaded as it is.
"""
import math
import os.path as osp
from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch.nn as nn
from mmengine.logging import MMLogger

from .adapter_checkpoint import load_adapter_checkpoint
from .checkpoint_file import CheckpointContents, checkpoint_contents, read_checkpoint
from .checkpoint_fit import ADAPTER_ONLY, check_checkpoint_fits

#: Relative tolerance of the frozen-weight digest (CPU and GPU loads agree far closer).
DIGEST_RTOL = 1e-4


class PretrainedWeightsError(RuntimeError):
    """The pretrained weights an adapter-only checkpoint needs are not named, missing or different."""


def is_adapter_only(meta: Mapping) -> bool:
    """Whether a checkpoint's ``meta`` marks it adapter-only."""
    return meta.get('kind') == ADAPTER_ONLY


def pretrained_checkpoint_of(model: nn.Module) -> Optional[str]:
    """The ``init_cfg`` checkpoint of the model's backbone (or the model), if it names one."""
    for module in (getattr(model, 'backbone', None), model):
        init_cfg = getattr(module, 'init_cfg', None) if module is not None else None
        if isinstance(init_cfg, Mapping) and init_cfg.get('type') == 'Pretrained' and init_cfg.get('checkpoint'):
            return str(init_cfg['checkpoint'])
    return None


def is_initialised(model: nn.Module) -> bool:
    """Whether ``init_weights()`` has run on the backbone (or the model)."""
    module = getattr(model, 'backbone', None) or model
    return bool(getattr(module, '_is_init', False))


def frozen_digest(model: nn.Module, exclude: Iterable[str]) -> Dict[str, List[float]]:
    """``{key: [sum, sum of squares, numel]}`` of the backbone's state-dict tensors not in ``exclude``.

    These are the frozen weights an adapter-only checkpoint leaves out; the
    digest, stored in the adapter file, tells whether a later load put the
    same weights under the adapters.
    """
    excluded = set(exclude)
    digest = {}
    for key, value in model.state_dict().items():
        if key in excluded or not key.startswith('backbone.') or not value.is_floating_point():
            continue
        flat = value.detach().double().flatten()
        digest[key] = [float(flat.sum()), float(flat.square().sum()), int(flat.numel())]
    return digest


def digest_mismatches(recorded: Mapping[str, List[float]], current: Mapping[str, List[float]]) -> List[str]:
    """Keys whose tensors differ between two :func:`frozen_digest` results (a key missing from either too)."""
    bad = []
    for key in sorted(set(recorded) | set(current)):
        if key not in recorded or key not in current:
            bad.append(key)
            continue
        (s0, q0, n0), (s1, q1, n1) = recorded[key], current[key]
        scale = math.sqrt(max(q0, q1) * max(n0, 1)) + 1e-12
        if n0 != n1 or abs(s0 - s1) > DIGEST_RTOL * scale or abs(q0 - q1) > DIGEST_RTOL * max(q0, q1) + 1e-12:
            bad.append(key)
    return bad


def _pretrained_hint(meta: Mapping) -> str:
    trained_on = meta.get('pretrained')
    return f' It was trained on top of {trained_on}.' if trained_on else ''


def ensure_pretrained_loaded(model: nn.Module, path: str, meta: Mapping, adapter_keys: Iterable[str] = (),
                             logger: Optional[MMLogger] = None) -> None:
    """Make sure the model holds the pretrained weights the adapter-only checkpoint ``path`` needs.

    Calls ``model.init_weights()`` when that has not happened yet (the test and
    inference paths), which loads ``model.backbone.init_cfg``'s checkpoint.

    Args:
        model: The built model.
        path: The adapter-only file (named in messages).
        meta: Its ``meta``.
        adapter_keys: The keys it holds (left out of the digest).
        logger: Where to report; default: the current ``MMLogger``.

    Raises:
        PretrainedWeightsError: The config names no pretrained weights, the
            file does not exist, or (when ``meta`` records a digest) the
            frozen weights differ from those the adapters were trained on.
    """
    logger = logger or MMLogger.get_current_instance()
    needed = pretrained_checkpoint_of(model)
    if needed is None:
        raise PretrainedWeightsError(
            f'checkpoint {path} is adapter-only: it holds what training changed, not the frozen pretrained '
            'weights, and the config names no pretrained weights to put it on (model.backbone.init_cfg is not '
            "dict(type='Pretrained', checkpoint=...))." + _pretrained_hint(meta) +
            " Set --cfg-options model.backbone.init_cfg.type=Pretrained model.backbone.init_cfg.checkpoint=FILE, "
            'or use the full checkpoint.')
    if not is_initialised(model):
        if '://' not in needed and not osp.isfile(needed):
            raise PretrainedWeightsError(
                f'checkpoint {path} is adapter-only and needs the pretrained weights {needed} '
                '(model.backbone.init_cfg.checkpoint), which do not exist.' + _pretrained_hint(meta) +
                ' Put that file there, set model.backbone.init_cfg.checkpoint to where it is, or use the full '
                'checkpoint.')
        from ..engine.log_filter import init_info_at_debug  # lazy: ditask_mm.engine imports this module
        logger.info(f'{osp.basename(path)} is adapter-only: loading the pretrained weights {needed} under it')
        with init_info_at_debug(model):
            model.init_weights()
    recorded = meta.get('frozen_digest')
    if recorded:
        bad = digest_mismatches(recorded, frozen_digest(model, exclude=adapter_keys))
        if bad:
            raise PretrainedWeightsError(
                f'checkpoint {path} is adapter-only, and the frozen weights now in the model (from {needed}) are '
                f'not the ones its adapters were trained on: {len(bad)} tensors differ, e.g. {bad[:3]}.'
                + _pretrained_hint(meta) + ' Point model.backbone.init_cfg.checkpoint at those weights.')
    else:
        logger.warning(f'{path} is adapter-only but records no digest of its frozen weights (written by an older '
                       f'extract_adapters.py): cannot check that {needed} are the weights it was trained on')


def load_model_checkpoint(model: nn.Module, path: str, checkpoint: Optional[Any] = None,
                          logger: Optional[MMLogger] = None) -> Any:
    """Load a full or an adapter-only checkpoint file into ``model``.

    Args:
        model: The built model (not a DDP wrapper).
        path: The checkpoint file.
        checkpoint: Its content when already read (a ``CheckpointContents``
            or the object the file holds).
        logger: Where to report; default: the current ``MMLogger``.

    Returns:
        The checkpoint object read from ``path`` (with its ``meta``, and the
        training state when the file has one).

    Raises:
        CheckpointReadError: The file is missing, truncated or corrupt.
        CheckpointMismatchError: It does not fit the model.
        PretrainedWeightsError: See :func:`ensure_pretrained_loaded`.
    """
    if checkpoint is None:
        contents: CheckpointContents = read_checkpoint(path)
    else:
        contents = checkpoint_contents(checkpoint, path)
    if is_adapter_only(contents.meta):
        ensure_pretrained_loaded(model, path, contents.meta, contents.state_dict.keys(), logger)
        load_adapter_checkpoint(model, path, logger=logger, checkpoint=contents)
    else:
        check_checkpoint_fits(model, path, contents, adapter_only=False)  # only loss_balancer. keys may differ
        model.load_state_dict(contents.state_dict, strict=False)
    return contents.raw


def checkpoint_has_training_state(checkpoint: Any) -> bool:
    """Whether a checkpoint object holds what ``Runner.resume`` needs (epoch, iteration, message hub)."""
    if not isinstance(checkpoint, Mapping):
        return False
    meta = checkpoint.get('meta') or {}
    return 'message_hub' in checkpoint and 'epoch' in meta and 'iter' in meta

