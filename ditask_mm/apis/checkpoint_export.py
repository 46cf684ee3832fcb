"""Derived checkpoints of a trained model: adapter-only, and adapters merged into plain weights.

:func:`adapter_only_checkpoint` keeps what training changed
(``tools/model_converters/extract_adapters.py``); :func:`merged_checkpoints`
folds the adapters into plain weights (``tools/model_converters/merge_adapters.py``).
Both return the objects to save; writing them is the caller's.
"""
import os.path as osp
from pathlib import Path
from typing import Dict, NamedTuple, Tuple, Union

from mmengine.config import Config

from ..adapters import MergedTaskLinear, adapter_layers, merge_adapters
from ..models.adapter_checkpoint import adapter_state_dict, check_full_checkpoint
from ..models.checkpoint_fit import ADAPTER_ONLY
from ..models.checkpoint_file import read_checkpoint
from ..models.model_checkpoint import frozen_digest, pretrained_checkpoint_of
from ..version import __version__
from .inference import init_model

#: What ``tools/train.py --resume`` needs besides the weights, kept by ``with_training_state``.
TRAINING_STATE_KEYS = ('message_hub', 'optimizer', 'param_schedulers')
TRAINING_META_KEYS = ('epoch', 'iter', 'seed', 'dataset_meta', 'cfg')


class CheckpointExportError(ValueError):
    """The source checkpoint cannot give the requested derived checkpoint."""


def adapter_only_checkpoint(config: Union[str, Path, Config], checkpoint: str,
                            with_training_state: bool = False) -> Tuple[Dict, int]:
    """The adapter-only checkpoint of a full one.

    Builds the config's model, loads the full checkpoint (it must fit the
    model exactly) and keeps every parameter with ``requires_grad=True`` plus
    the heads' buffers, with a ``meta`` that records the pretrained weights
    (``pretrained``) and a digest of the frozen ones (``frozen_digest``).

    Args:
        config: The config file (or ``Config``) of the checkpoint's model.
        checkpoint: The full checkpoint file.
        with_training_state: Also keep the epoch, iteration, message hub,
            optimizer and scheduler states, so that ``--resume`` can continue.

    Returns:
        ``(adapter-only checkpoint, number of tensors in the source)``.

    Raises:
        CheckpointReadError: The file cannot be read.
        CheckpointMismatchError: It does not fit the config's model.
        CheckpointExportError: It is already adapter-only, or holds no
            training state when ``with_training_state`` asks for it.
    """
    model = init_model(config, init_weights=False)
    contents = read_checkpoint(checkpoint)
    source, state_dict, source_meta = contents.raw, contents.state_dict, contents.meta
    check_full_checkpoint(model, checkpoint, state_dict)
    if source_meta.get('kind') == ADAPTER_ONLY:
        raise CheckpointExportError(f'{checkpoint} is already adapter-only')
    model.load_state_dict(state_dict, strict=True)
    kept = {k: v.detach().cpu().clone() for k, v in adapter_state_dict(model).items()}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    meta = dict(kind=ADAPTER_ONLY, keys=len(kept), numel=sum(v.numel() for v in kept.values()),
                trainable_params=trainable, config=model.cfg.pretty_text, source=osp.abspath(checkpoint),
                source_meta={k: v for k, v in source_meta.items() if isinstance(v, (str, int, float, bool))},
                ditask_mm_version=__version__, pretrained=pretrained_checkpoint_of(model),
                frozen_digest=frozen_digest(model, exclude=kept))
    result = dict(meta=meta, state_dict=kept)
    if with_training_state:
        missing = [k for k in ('message_hub', 'optimizer') if k not in source]
        if missing or 'epoch' not in source_meta:
            raise CheckpointExportError(f'{checkpoint} holds no training state to keep '
                                        f'({missing or "meta.epoch"} missing)')
        meta.update({k: source_meta[k] for k in TRAINING_META_KEYS if k in source_meta})
        result.update({k: source[k] for k in TRAINING_STATE_KEYS if k in source})
    return result, len(state_dict)


class MergedCheckpoints(NamedTuple):
    """What :func:`merged_checkpoints` returns."""
    #: The whole model, adapters replaced by ``MergedTaskLinear`` (``merged.pth``).
    merged: Dict
    #: The backbone as a plain mmseg ``SwinTransformer`` state dict (``backbone_mmseg_swin.pth``).
    plain_backbone: Dict
    #: Adapter layers merged, and how many of them have per-task weights.
    merged_layers: int
    branched_layers: int


def merged_checkpoints(config: Union[str, Path, Config], checkpoint: str) -> MergedCheckpoints:
    """Fold a trained model's adapters into plain weights.

    Args:
        config: The config file (or ``Config``) of the checkpoint's model.
        checkpoint: A full checkpoint, or an adapter-only one (put on top of
            the config's pretrained weights).

    Returns:
        The merged model's checkpoint (load it with the same config; see
        :func:`~ditask_mm.apis.init_model`) and the plain backbone's; both
        with a ``meta`` naming the source.

    Raises:
        CheckpointReadError, CheckpointMismatchError, PretrainedWeightsError:
            As :func:`~ditask_mm.apis.init_model`.
    """
    model = init_model(config, checkpoint)
    backbone = getattr(model, 'backbone', model)
    merged = merge_adapters(model)
    meta = dict(config=model.cfg.pretty_text, source_checkpoint=osp.abspath(checkpoint),
                merged_layers=len(merged), note='load with model.backbone.adapter.type=MergedTaskLinear')
    plain = {k: v for k, v in backbone.state_dict().items() if '.task_weights.' not in k}
    branched = sum(1 for _, layer in adapter_layers(backbone) if isinstance(layer, MergedTaskLinear) and layer.tasks)
    return MergedCheckpoints(
        merged=dict(meta=meta, state_dict=model.state_dict()),
        plain_backbone=dict(meta=dict(meta, note='plain mmseg SwinTransformer state dict: shared adapted weights'),
                            state_dict=plain),
        merged_layers=len(merged), branched_layers=branched)
