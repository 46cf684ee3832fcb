"""A segmentor with one backbone, one decode head and one loss per task.

mmseg's ``EncoderDecoder`` assumes one label map; this model carries several
targets per image (:mod:`ditask_mm.tasks`). One head per task is built from
one template; each head owns its loss, weight included, and the segmentor
reports the heads' losses with the task as prefix (e.g. ``semseg.loss_ce``).
It returns one prediction field per task (``pred_sem_seg``,
``pred_human_parts``, ``pred_saliency``, ``pred_normals``, ``pred_depth``,
``pred_edge``), each cropped to the unpadded image and resized to the
original image size.

The backbone may be multi-task (returning ``{task: [maps]}``, as
:class:`~ditask_mm.models.backbones.MultiTaskSwinTransformer`) or any mmseg
backbone returning a list of maps, which then feeds every head.
"""
import copy
import inspect
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Sequence

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
from ..losses.balancers import balanced_update, is_gradient_balancer

#: The loss of each task (the paper's, docs/configs.md), without a weight:
#: every ``loss_decode`` entry without a ``type`` is merged over it. The task
#: weights have one home, the base config's ``model.loss_decode``
#: (``configs/_base_/models/mtl_segmentor.py``); a segmentor built by hand
#: without one weighs every task 1 (the losses' own default).
TASK_LOSSES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    'semseg': MappingProxyType(dict(type='MTLCrossEntropyLoss')),
    'human_parts': MappingProxyType(dict(type='MTLCrossEntropyLoss')),
    'sal': MappingProxyType(dict(type='BalancedBCELoss')),
    'normals': MappingProxyType(dict(type='NormalsL1Loss')),
    'depth': MappingProxyType(dict(type='DepthL1Loss')),
    'edge': MappingProxyType(dict(type='BalancedBCELoss', pos_weight=0.95)),
})
#: Arguments of earlier versions, and where their settings live now.
_REMOVED_ARGS = dict(
    loss_weights="each task's loss_weight in its loss: model.loss_decode.<task>.loss_weight",
    losses='model.loss_decode (one loss config per task)')


@MODELS.register_module()
class MultiTaskSegmentor(BaseSegmentor):
    """Multi-task dense prediction with mmseg's ``loss``/``predict``/``tensor`` modes.

    One head is built per task from the ``decode_head`` template, with the
    task's ``out_channels`` (``num_classes[task]`` for label tasks, the
    task's channels otherwise: saliency, edge and depth 1, normals 3) and its
    ``loss_decode`` entry; ``decode_heads`` may override any key of one
    task's head. The heads are kept in ``self.decode_heads`` (a ModuleDict),
    so checkpoint keys read ``decode_heads.<task>.…``.

    Args:
        tasks: Task names (see :mod:`ditask_mm.tasks`). Configs set them once,
            as the top-level ``tasks``; :func:`ditask_mm.engine.resolve_tasks`
            copies them here.
        backbone: Backbone config. If it takes ``tasks`` and sets none, the
            segmentor's are passed; if it sets other tasks, that is an error.
        decode_head: Head template, e.g. ``dict(type='MTLHRNetHead')``,
            without ``out_channels`` and ``loss_decode`` (set per task).
        num_classes: ``{task: C}`` for the label tasks (semseg, human_parts).
            Entries of label tasks not in ``tasks`` are allowed.
        loss_decode: ``{task: loss config}``, the loss weight inside
            (``loss_weight``); a task without an entry gets its
            :data:`TASK_LOSSES` entry (weight 1), and an entry without
            ``type`` (``dict(loss_weight=5.0)``, as the base config's) is
            merged over it. Entries of known tasks not in ``tasks`` are
            allowed.
        decode_heads: Optional ``{task: head config}`` merged (shallowly)
            over the template for that task; with no template, each task
            needs a full head config here.
        neck: Optional neck for list-returning backbones.
        data_preprocessor: Usually ``MultiTaskDataPreProcessor``.
        train_cfg, test_cfg: Unused; accepted for mmseg compatibility.
        align_corners: For the resize of predictions to the image size.
        init_cfg: mmengine init config.
        loss_balancer: Optional balancer config, e.g.
            ``dict(type='UncertaintyWeighting')`` (see
            :mod:`ditask_mm.models.losses.balancers`), built with the
            segmentor's tasks and kept as ``self.loss_balancer`` (its state is
            part of the checkpoint, under ``loss_balancer.``). ``None`` (the
            default): no balancer module at all, the losses are summed with
            their configured weights and the state dict is unchanged.
        loss_weights, losses: Removed; passing either raises a ``ValueError``
            that says where the setting lives now.
    """

    def __init__(self,
                 tasks: Optional[Sequence[str]] = None,
                 backbone: Optional[dict] = None,
                 decode_head: Optional[dict] = None,
                 num_classes: Optional[Mapping[str, int]] = None,
                 loss_decode: Optional[Mapping[str, dict]] = None,
                 decode_heads: Optional[Mapping[str, dict]] = None,
                 neck: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 align_corners: bool = False,
                 init_cfg: Optional[dict] = None,
                 loss_balancer: Optional[dict] = None,
                 loss_weights: Optional[dict] = None,
                 losses: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        for name, value in (('loss_weights', loss_weights), ('losses', losses)):
            if value is not None:
                raise ValueError(f'MultiTaskSegmentor no longer takes {name}={value!r}; set {_REMOVED_ARGS[name]}')
        if tasks is None:
            raise ValueError('MultiTaskSegmentor needs tasks; a config sets them once, as the top-level '
                             "tasks=[...], and ditask_mm.engine.resolve_tasks(cfg) (called by load_run_config) "
                             'copies them into model.tasks')
        if backbone is None:
            raise ValueError('MultiTaskSegmentor needs a backbone config')
        self.tasks = check_tasks(tasks, 'MultiTaskSegmentor.tasks')
        head_args = (decode_head, num_classes or {}, loss_decode or {}, decode_heads or {})
        self._check_head_args(*head_args)  # before the (slow) backbone is built
        self.backbone = MODELS.build(self._backbone_cfg(backbone))
        self.neck = MODELS.build(neck) if neck is not None else None  # before the heads: _head_cfgs reads it
        head_cfgs = self._head_cfgs(*head_args)
        self.decode_heads = nn.ModuleDict({t: MODELS.build(head_cfgs[t]) for t in self.tasks})
        self.align_corners = align_corners
        self.train_cfg, self.test_cfg = train_cfg, test_cfg
        self.loss_balancer = self._build_loss_balancer(loss_balancer) if loss_balancer is not None else None

    def _build_loss_balancer(self, cfg: dict) -> nn.Module:
        """The balancer of ``model.loss_balancer``, given the segmentor's tasks."""
        cfg = dict(cfg)
        if 'type' not in cfg:
            raise KeyError("model.loss_balancer has no type; set e.g. model.loss_balancer=dict(type='DWA')")
        if 'tasks' in cfg and tuple(cfg['tasks']) != self.tasks:
            raise ValueError(f"model.loss_balancer.tasks {list(cfg['tasks'])} differ from the segmentor tasks "
                             f'{list(self.tasks)}; leave them out: the segmentor passes its own')
        cfg['tasks'] = list(self.tasks)
        return MODELS.build(cfg)

    def _backbone_cfg(self, backbone: dict) -> dict:
        """The backbone config, given the segmentor's tasks when it takes ``tasks`` and sets none."""
        backbone = dict(backbone)
        backbone_tasks = backbone.get('tasks')
        if backbone_tasks is not None and tuple(backbone_tasks) != self.tasks:
            raise ValueError(f'backbone tasks {list(backbone_tasks)} differ from the segmentor tasks '
                             f'{list(self.tasks)}; set them once, in the top-level tasks=[...]')
        backbone_cls = MODELS.get(backbone['type']) if isinstance(backbone['type'], str) else backbone['type']
        if backbone_cls is None:
            raise KeyError(f"backbone type {backbone['type']!r} is not registered")
        if backbone_tasks is None and 'tasks' in inspect.signature(backbone_cls).parameters:
            backbone['tasks'] = list(self.tasks)
        return backbone

    def _check_head_args(self, template: Optional[Mapping], num_classes: Mapping[str, int],
                         loss_decode: Mapping[str, dict], overrides: Mapping[str, dict]) -> None:
        """Refuse unknown task names, class counts of non-label tasks and per-task keys in the template."""
        for name, mapping in (('num_classes', num_classes), ('loss_decode', loss_decode),
                              ('decode_heads', overrides)):
            unknown = sorted(set(mapping) - set(TASKS))
            if unknown:
                raise KeyError(f'model.{name} has entries for unknown task(s) {unknown}; known tasks: {sorted(TASKS)}')
        not_labels = sorted(t for t in num_classes if TASKS[t].kind != 'labels')
        if not_labels:
            fixed_channels = {t: TASKS[t].channels for t in not_labels}
            raise ValueError(f'model.num_classes has entries for {not_labels}, which are not label tasks; their '
                             f'channels are fixed ({fixed_channels}); remove them')
        if template is not None:
            fixed = sorted({'out_channels', 'loss_decode'} & set(template))
            if fixed:
                raise ValueError(f'model.decode_head (the template of every task head) sets {fixed}, which '
                                 f'differ per task; set model.num_classes / model.loss_decode, or override one '
                                 f'task in model.decode_heads.<task>')
        missing = [t for t in self.tasks if template is None and t not in overrides]
        if missing:
            raise KeyError(f'decode_heads has no head for task(s) {missing} and there is no head template; set '
                           f"model.decode_head=dict(type='MTLHRNetHead')")
        for task in self.tasks:
            merged = {**dict(template or {}), **dict(overrides.get(task) or {})}
            if 'type' not in merged:
                raise KeyError(f'the head of task {task!r} has no type; set model.decode_head.type')
            if 'out_channels' not in merged:
                self._out_channels(task, num_classes)  # raises for a label task without num_classes

    def _head_cfgs(self, template: Optional[Mapping], num_classes: Mapping[str, int],
                   loss_decode: Mapping[str, dict], overrides: Mapping[str, dict]) -> Dict[str, dict]:
        """One complete head config per task: template, then the task's override, then the derived keys."""
        cfgs = {}
        for task in self.tasks:
            cfg = {**copy.deepcopy(dict(template or {})), **copy.deepcopy(dict(overrides.get(task) or {}))}
            if 'out_channels' not in cfg:
                cfg['out_channels'] = self._out_channels(task, num_classes)
            if 'loss_decode' not in cfg:
                loss = copy.deepcopy(dict(loss_decode.get(task) or {}))
                cfg['loss_decode'] = loss if 'type' in loss else {**dict(TASK_LOSSES[task]), **loss}
            if 'in_channels' not in cfg and self.neck is None and hasattr(self.backbone, 'out_channels'):
                cfg['in_channels'] = list(self.backbone.out_channels)  # the backbone says them
            cfgs[task] = cfg
        return cfgs

    @staticmethod
    def _out_channels(task: str, num_classes: Mapping[str, int]) -> int:
        spec = TASKS[task]
        if spec.kind != 'labels':
            return spec.channels
        if task not in num_classes:
            raise KeyError(f'model.num_classes has no entry for the label task {task!r}; set '
                           f'model.num_classes=dict({task}=C) (given: {dict(num_classes)})')
        return int(num_classes[task])

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
        """Each head's losses (weighted by the losses themselves), keyed ``'{task}.{loss_name}'``.

        With a ``loss_balancer``, each task's loss is the sum of its
        ``'{task}.'`` entries whose key contains ``loss``; the balancer weighs
        it, and every such entry is multiplied by the task's weight under its
        own key (so the log keeps its names). The balancer adds its extra terms
        as ``balance.loss_<name>`` (summed into the objective) and its weights
        as ``balance.weight.<task>`` (logged only: no ``loss`` in the name).
        Without one, or with a gradient-level balancer (which combines the
        tasks' gradients in :meth:`train_step` instead), the entries are
        returned as the heads give them.
        """
        feats = self.extract_feat(inputs)
        size = tuple(inputs.shape[-2:])
        losses = {}
        for task in self.tasks:
            target = self._stack_targets(task, data_samples)
            for name, value in self.decode_heads[task].loss(feats[task], target, out_size=size).items():
                losses[f'{task}.{name}'] = value
        if self.loss_balancer is not None and not is_gradient_balancer(self.loss_balancer):
            losses = self.loss_balancer.weigh_loss_dict(losses)
        return losses

    def train_step(self, data, optim_wrapper) -> Dict[str, Tensor]:
        """mmengine's ``train_step``; with a gradient-level balancer, its update instead of ``update_params``.

        Under DDP, :class:`~ditask_mm.engine.GradientBalancingDDP` runs the
        same update (mmengine's DDP wrapper never calls this method).
        """
        if not is_gradient_balancer(self.loss_balancer):
            return super().train_step(data, optim_wrapper)
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
            losses = self._run_forward(data, mode='loss')
        return balanced_update(self, losses, optim_wrapper)

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
