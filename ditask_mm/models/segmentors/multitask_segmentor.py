"""A segmentor with one backbone, one decode head and one loss per task.

mmseg's ``EncoderDecoder`` assumes one label map; this model carries several
targets per image (:mod:`ditask_mm.tasks`), computes a weighted sum of
per-task losses (keys prefixed by the task, e.g. ``semseg.loss_ce``), and
returns one prediction field per task (``pred_sem_seg``,
``pred_human_parts``, ``pred_saliency``, ``pred_normals``, ``pred_depth``,
``pred_edge``), each cropped to the unpadded image and resized to the
original image size.

The backbone may be multi-task (returning ``{task: [maps]}``, as
:class:`~ditask_mm.models.backbones.MultiTaskSwinTransformer`) or any mmseg
backbone returning a list of maps, which then feeds every head.
"""
import inspect
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor
from mmseg.structures import SegDataSample
from torch import Tensor

from ...adapters import batched_spectra
from ...registry import MODELS
from ...tasks import TASKS, check_tasks

#: The paper's losses (shared/docs/method.md §4).
DEFAULT_LOSSES = {
    'semseg': dict(type='MTLCrossEntropyLoss'),
    'human_parts': dict(type='MTLCrossEntropyLoss'),
    'sal': dict(type='BalancedBCELoss'),
    'edge': dict(type='BalancedBCELoss', pos_weight=0.95),
    'normals': dict(type='NormalsL1Loss'),
    'depth': dict(type='DepthL1Loss'),
}
#: The paper's task weights: PASCAL semseg 1, parts 2, sal 5, normals 10;
#: NYUD semseg 1, depth 1, normals 10, edge 50.
DEFAULT_LOSS_WEIGHTS = {'semseg': 1.0, 'human_parts': 2.0, 'sal': 5.0, 'normals': 10.0, 'depth': 1.0, 'edge': 50.0}


@MODELS.register_module()
class MultiTaskSegmentor(BaseSegmentor):
    """Multi-task dense prediction with mmseg's ``loss``/``predict``/``tensor`` modes.

    Args:
        tasks: Task names (see :mod:`ditask_mm.tasks`).
        backbone: Backbone config. If it takes ``tasks`` and sets none, the
            segmentor's are passed; if it sets other tasks, that is an error.
        decode_heads: ``{task: head config}``, one per task.
        losses: ``{task: loss config}``; defaults to :data:`DEFAULT_LOSSES`.
        loss_weights: ``{task: weight}``; defaults to
            :data:`DEFAULT_LOSS_WEIGHTS`.
        neck: Optional neck for list-returning backbones.
        data_preprocessor: Usually ``MultiTaskDataPreProcessor``.
        train_cfg, test_cfg: Unused; accepted for mmseg compatibility.
        align_corners: For the resize of predictions to the image size.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 tasks: Sequence[str],
                 backbone: dict,
                 decode_heads: Dict[str, dict],
                 losses: Optional[Dict[str, dict]] = None,
                 loss_weights: Optional[Dict[str, float]] = None,
                 neck: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 align_corners: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.tasks = check_tasks(tasks, 'MultiTaskSegmentor.tasks')
        for name, mapping in (('decode_heads', decode_heads), ('losses', losses or {}),
                              ('loss_weights', loss_weights or {})):
            extra = sorted(set(mapping) - set(self.tasks))
            if extra:
                raise KeyError(f'{name} has entries for {extra}, which are not in tasks {list(self.tasks)}')
        missing = [t for t in self.tasks if t not in decode_heads]
        if missing:
            raise KeyError(f'decode_heads has no head for task(s) {missing}')
        backbone = dict(backbone)
        backbone_tasks = backbone.get('tasks')
        if backbone_tasks is not None and tuple(backbone_tasks) != self.tasks:
            raise ValueError(f'backbone tasks {list(backbone_tasks)} differ from the segmentor tasks '
                             f'{list(self.tasks)}; set them once, in model.tasks')
        backbone_cls = MODELS.get(backbone['type']) if isinstance(backbone['type'], str) else backbone['type']
        if backbone_cls is None:
            raise KeyError(f"backbone type {backbone['type']!r} is not registered")
        if backbone_tasks is None and 'tasks' in inspect.signature(backbone_cls).parameters:
            backbone['tasks'] = list(self.tasks)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None  # before the heads: _head_cfg reads it
        self.decode_heads = nn.ModuleDict({t: MODELS.build(self._head_cfg(decode_heads[t])) for t in self.tasks})
        losses = losses or {}
        self.losses = nn.ModuleDict({t: MODELS.build(losses.get(t, DEFAULT_LOSSES[t])) for t in self.tasks})
        weights = loss_weights or {}
        self.loss_weights = {t: float(weights.get(t, DEFAULT_LOSS_WEIGHTS[t])) for t in self.tasks}
        self.align_corners = align_corners
        self.train_cfg, self.test_cfg = train_cfg, test_cfg

    def _head_cfg(self, cfg: dict) -> dict:
        """Fill a head's ``in_channels`` from the backbone when the config omits it."""
        cfg = dict(cfg)
        if 'in_channels' not in cfg and self.neck is None and hasattr(self.backbone, 'out_channels'):
            cfg['in_channels'] = list(self.backbone.out_channels)
        return cfg

    # ----------------------------------------------------------------- features
    @property
    def with_neck(self) -> bool:
        return self.neck is not None

    def extract_feat(self, inputs: Tensor) -> Dict[str, List[Tensor]]:
        """Backbone (and neck) features, as ``{task: [maps]}``."""
        with batched_spectra(self.backbone):  # no-op without DiTASK layers or gradients
            feats = self.backbone(inputs)
        if isinstance(feats, dict):
            missing = [t for t in self.tasks if t not in feats]
            if missing:
                raise KeyError(f'the backbone returned no features for task(s) {missing}')
            if self.with_neck:
                feats = {t: self.neck(feats[t]) for t in self.tasks}
            return feats
        if self.with_neck:
            feats = self.neck(feats)
        return {t: list(feats) for t in self.tasks}

    def encode_decode(self, inputs: Tensor, batch_img_metas: Optional[List[dict]] = None) -> Dict[str, Tensor]:
        """``{task: (B, C_task, H, W)}`` head outputs at the input size."""
        feats = self.extract_feat(inputs)
        size = tuple(inputs.shape[-2:])
        return {t: self.decode_heads[t](feats[t], out_size=size) for t in self.tasks}

    def _forward(self, inputs: Tensor, data_samples=None) -> Dict[str, Tensor]:
        """Tensor mode: the raw per-task outputs at the input size."""
        return self.encode_decode(inputs)

    # -------------------------------------------------------------------- loss
    def loss(self, inputs: Tensor, data_samples: List[SegDataSample]) -> Dict[str, Tensor]:
        """Weighted per-task losses, keyed ``'{task}.{loss_name}'``."""
        outputs = self.encode_decode(inputs)
        losses = {}
        for task in self.tasks:
            target = self._stack_targets(task, data_samples)
            loss = self.losses[task]
            losses[f'{task}.{loss.loss_name}'] = self.loss_weights[task] * loss(outputs[task], target)
        return losses

    def _stack_targets(self, task: str, data_samples: List[SegDataSample]) -> Tensor:
        spec = TASKS[task]
        targets = []
        for i, sample in enumerate(data_samples):
            if spec.gt_key not in sample:
                raise KeyError(f'data sample {i} ({sample.metainfo.get("img_path", "?")}) has no {spec.gt_key} '
                               f'for task {task!r}; the pipeline must load and pack it')
            data = sample.get(spec.gt_key).data
            targets.append(data if data.dim() == 3 else data.unsqueeze(0))
        target = torch.stack(targets)
        return target[:, 0].long() if spec.is_label_map else target.float()

    # ----------------------------------------------------------------- predict
    def predict(self, inputs: Tensor, data_samples: Optional[List[SegDataSample]] = None) -> List[SegDataSample]:
        """Predictions per image, one field per task, at the original size."""
        outputs = self.encode_decode(inputs)
        if data_samples is None:
            shape = tuple(inputs.shape[-2:])
            data_samples = [SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))
                            for _ in range(inputs.shape[0])]
        return self.postprocess_result(outputs, data_samples)

    def postprocess_result(self, outputs: Dict[str, Tensor], data_samples: List[SegDataSample]) -> List[SegDataSample]:
        """Crop padding, resize to ``ori_shape`` and decode each task's output."""
        for i, sample in enumerate(data_samples):
            meta = sample.metainfo
            height, width = meta.get('img_shape', outputs[self.tasks[0]].shape[-2:])[:2]
            ori = tuple(meta.get('ori_shape', (height, width))[:2])
            for task in self.tasks:
                out = outputs[task][i:i + 1, :, :height, :width].float()
                if tuple(out.shape[-2:]) != ori:
                    out = F.interpolate(out, size=ori, mode='bilinear', align_corners=self.align_corners)
                sample.set_field(PixelData(data=self._decode(task, out[0])), TASKS[task].pred_key)
        return data_samples

    @staticmethod
    def _decode(task: str, out: Tensor) -> Tensor:
        kind = TASKS[task].kind
        if kind == 'labels':
            return out.argmax(dim=0, keepdim=True)
        if kind == 'binary':
            return out.sigmoid()
        if kind == 'vectors':
            return F.normalize(out, dim=0, eps=1e-12)
        return out
