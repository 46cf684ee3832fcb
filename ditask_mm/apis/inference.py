"""Build a multi-task model from a config (and a checkpoint) and predict every task on images.

:func:`init_model` is the one way the tools build a model: it reads the
config, builds ``cfg.model`` in the ``ditask_mm`` scope and puts a checkpoint
on it through :func:`ditask_mm.models.model_checkpoint.load_model_checkpoint`,
the function ``CheckedRunner.load_checkpoint`` uses, so every kind of
checkpoint of ours loads the same way in training, testing and inference:

* a full checkpoint, which must fit the model exactly;
* an adapter-only one (``tools/model_converters/extract_adapters.py``), put
  on top of the pretrained weights the config's ``model.backbone.init_cfg``
  names (``init_weights()`` runs first);
* a merged one (``merged.pth`` of ``tools/model_converters/merge_adapters.py``):
  its ``meta`` says so, and the model is then built with
  ``model.backbone.adapter.type='MergedTaskLinear'``.

:func:`inference_model` preprocesses images the way ``tools/demo.py`` always
has: read as BGR, resized (bilinear) to the test pipeline's size, normalised
by the model's data preprocessor; the predictions come back at the original
image size.
"""
import copy
import os
import os.path as osp
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import init_default_scope

from .. import models  # noqa: F401  (registers the models)
from ..engine.task_config import resolve_tasks
from ..models.checkpoint_file import read_checkpoint
from ..models.model_checkpoint import load_model_checkpoint
from ..registry import MODELS

ImageInput = Union[str, Path, np.ndarray]

#: The adapter type a merged checkpoint (``merge_adapters.py``'s ``merged.pth``) is loaded into.
MERGED_ADAPTER_TYPE = 'MergedTaskLinear'


def _read_config(config: Union[str, Path, Config]) -> Config:
    """A private copy of ``config`` (a file is read; a ``Config`` is deep-copied)."""
    if isinstance(config, Config):
        return copy.deepcopy(config)
    if not isinstance(config, (str, Path)):
        raise TypeError(f'config must be a config file path or an mmengine Config, got {type(config).__name__}')
    path = os.fspath(config)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path} does not exist; pass the path of a config file, '
                                'e.g. configs/ditask/swin-t_pascal-mtl.py')
    return Config.fromfile(path)


def _finalise_config(cfg: Config) -> None:
    """Complete ``cfg`` in place once the overrides are applied, before anything is built from it.

    The config's top-level ``tasks`` are copied to the model (and checked
    against every other part that names tasks), as the tools do.
    """
    resolve_tasks(cfg)


def _is_merged(meta: Mapping) -> bool:
    """Whether a checkpoint's ``meta`` marks it as written by ``merge_adapters.py`` (``merged.pth``)."""
    return 'merged_layers' in meta


def _use_merged_adapters(cfg: Config, path: str) -> None:
    """Switch ``cfg.model.backbone.adapter`` to plain merged weights for the merged checkpoint ``path``."""
    backbone = cfg.model.get('backbone') or {}
    adapter = backbone.get('adapter') if isinstance(backbone, Mapping) else None
    if not isinstance(adapter, Mapping) or adapter.get('type') == MERGED_ADAPTER_TYPE:
        return  # no adapter to switch (the checkpoint fit check reports any mismatch), or already switched
    print_log(f'{osp.basename(path)} holds merged adapters: building model.backbone.adapter as '
              f'{MERGED_ADAPTER_TYPE} instead of {adapter.get("type")}', logger='current')
    adapter['type'] = MERGED_ADAPTER_TYPE


def init_model(config: Union[str, Path, Config],
               checkpoint: Optional[str] = None,
               device: str = 'cpu',
               cfg_options: Optional[dict] = None,
               *,
               init_weights: bool = True) -> nn.Module:
    """Build the config's model, load a checkpoint, and return it on ``device`` in eval mode.

    Args:
        config: A config file path or an mmengine ``Config`` (copied, never
            changed).
        checkpoint: A full, adapter-only or merged checkpoint of the config's
            model (see the module docstring), or ``None``.
        device: Torch device string the model is moved to.
        cfg_options: Overrides merged into the config first
            (``Config.merge_from_dict``: ``{'model.backbone.drop_path_rate': 0.}``).
        init_weights: Only used without a checkpoint. ``True`` (default)
            calls ``model.init_weights()``, which loads the pretrained
            backbone the config's ``init_cfg`` names (a download when it is a
            URL). ``False`` keeps the constructors' initialisation and reads
            no file: for counting parameters and benchmarks.

    Returns:
        The model, in eval mode, with the final config as ``model.cfg``.

    Raises:
        FileNotFoundError: The config file does not exist.
        CheckpointReadError: The checkpoint is missing, truncated or corrupt.
        CheckpointMismatchError: It does not fit the config's model.
        PretrainedWeightsError: An adapter-only checkpoint whose pretrained
            weights the config does not name, or are missing or different.
    """
    cfg = _read_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise KeyError(f'config {getattr(cfg, "filename", None) or "(in memory)"} has no `model`; expected '
                       "model = dict(type='MultiTaskSegmentor', ...)")
    contents = None
    if checkpoint is not None:
        checkpoint = os.fspath(checkpoint)
        contents = read_checkpoint(checkpoint)
        if _is_merged(contents.meta):
            _use_merged_adapters(cfg, checkpoint)
    _finalise_config(cfg)
    init_default_scope(cfg.get('default_scope') or 'ditask_mm')
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_model_checkpoint(model, checkpoint, checkpoint=contents.raw)
    elif init_weights:
        model.init_weights()
    model.cfg = cfg
    model.to(device)
    model.eval()
    return model


def pipeline_image_size(cfg: Config, image_hw: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """The ``(height, width)`` the config's test pipeline resizes an ``image_hw`` image to, if it says.

    Looks at ``test_pipeline``, then the test and val dataloaders' pipelines,
    for a ``FixedResizeMTL`` (``size``) or an mmcv ``Resize`` (``scale``,
    ``(w, h)``, or ``(long, short)`` with ``keep_ratio``).

    Args:
        cfg: The model's config.
        image_hw: The image's ``(height, width)``.

    Returns:
        The size, or ``None`` when no pipeline resizes.
    """
    pipelines = [cfg.get('test_pipeline')]
    for loader in ('test_dataloader', 'val_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset') or {}
        pipelines.append(dataset.get('pipeline'))
    for pipeline in filter(None, pipelines):
        for step in pipeline:
            kind = str(step.get('type', ''))
            if kind.endswith('FixedResizeMTL') and step.get('size') is not None:
                size = step['size']
                return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
            if kind.split('.')[-1] == 'Resize' and step.get('scale') is not None:
                scale = step['scale']  # mmcv: (w, h), or (long, short) with keep_ratio
                scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
                if not step.get('keep_ratio', False):
                    return int(scale[1]), int(scale[0])
                height, width = image_hw
                ratio = min(max(scale) / max(height, width), min(scale) / min(height, width))
                return int(height * ratio + 0.5), int(width * ratio + 0.5)
    return None


def _load_image(image: ImageInput) -> Tuple[np.ndarray, Optional[str]]:
    """``(H×W×3 BGR uint8 array, path or None)`` of a path or an array."""
    import cv2
    if isinstance(image, (str, Path)):
        path = os.fspath(image)
        if not osp.isfile(path):
            raise FileNotFoundError(f'image {path} does not exist')
        array = cv2.imread(path, cv2.IMREAD_COLOR)
        if array is None:
            raise ValueError(f'cannot read image {path}: OpenCV cannot decode it (expected a PNG, JPEG or '
                             'another image format OpenCV reads)')
        return array, path
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f'an image array must be H×W×3 BGR uint8 (as cv2.imread returns), got shape '
                             f'{tuple(image.shape)} and dtype {image.dtype}')
        return image, None
    raise TypeError(f'an image is a file path or an H×W×3 BGR uint8 numpy array, got {type(image).__name__}')


def _prepare(image: np.ndarray, path: Optional[str], size: Optional[Tuple[int, int]]) -> dict:
    """One ``test_step`` batch: the (resized) image as a uint8 ``3×h×w`` tensor and its data sample."""
    import cv2
    from mmseg.structures import SegDataSample
    ori_hw = tuple(image.shape[:2])
    if size is not None and tuple(size) != ori_hw:
        image = cv2.resize(image, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    metainfo = dict(ori_shape=ori_hw, img_shape=tuple(image.shape[:2]))
    if path is not None:
        metainfo['img_path'] = path
    inputs = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    return dict(inputs=[inputs], data_samples=[SegDataSample(metainfo=metainfo)])


def inference_model(model: nn.Module, images: Union[ImageInput, Sequence[ImageInput]],
                    size: Optional[Tuple[int, int]] = None) -> Any:
    """Predict every task of ``model`` on one image or a list of images.

    Each image is resized (bilinear) to ``size``, else to the size the
    config's test pipeline resizes to (:func:`pipeline_image_size`), else kept,
    and run through ``model.test_step`` under ``torch.no_grad()``, one image
    at a time (images of different sizes need no padding).

    Args:
        model: A model from :func:`init_model` (it needs ``model.cfg``).
        images: A file path or an H×W×3 BGR uint8 array (as ``cv2.imread``
            returns), or a list of them.
        size: ``(height, width)`` to resize to instead of the pipeline's.

    Returns:
        One ``SegDataSample`` per image (a single one for a single input),
        with every task's prediction field (``pred_sem_seg``,
        ``pred_human_parts``, ``pred_saliency``, ``pred_normals``,
        ``pred_depth``, ``pred_edge``, as the model's tasks have; see
        :mod:`ditask_mm.tasks`) at the image's original size, and the
        ``ori_shape`` and ``img_shape`` (the size the model saw) metainfo.

    Raises:
        ValueError: ``model`` has no ``cfg``, or an image cannot be decoded
            or has the wrong layout.
        FileNotFoundError: An image file does not exist.
    """
    cfg = getattr(model, 'cfg', None)
    if cfg is None:
        raise ValueError(f'inference_model needs model.cfg, the config the {type(model).__name__} was built from: '
                         'build the model with ditask_mm.apis.init_model, or set model.cfg = Config.fromfile(...)')
    single = not isinstance(images, (list, tuple))
    loaded = [_load_image(image) for image in ([images] if single else images)]  # every path checked first
    results: List[Any] = []
    with torch.no_grad():
        for image, path in loaded:
            target = tuple(size) if size is not None else pipeline_image_size(cfg, image.shape[:2])
            results.extend(model.test_step(_prepare(image, path, target)))
    return results[0] if single else results
