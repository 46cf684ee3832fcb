"""Tiny multi-task models and data samples for segmentor tests."""
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

import ditask_mm.models  # noqa: F401
from ditask_mm.registry import MODELS

PASCAL_TASKS = ('semseg', 'human_parts', 'sal', 'normals')
CHANNELS = {'semseg': 21, 'human_parts': 7, 'sal': 1, 'normals': 3, 'depth': 1, 'edge': 1}
NUM_CLASSES = {t: CHANNELS[t] for t in ('semseg', 'human_parts')}
TINY_ARCH = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
#: The task weights' one home: the base config (read, not copied).
BASE_LOSS_DECODE = Config.fromfile(
    str(Path(__file__).resolve().parents[3] / 'configs/_base_/models/mtl_segmentor.py')).model.loss_decode.to_dict()


def tiny_segmentor_cfg(tasks=PASCAL_TASKS, theta_init='kaiming', **kwargs):
    in_channels = [32, 64, 128, 128]  # post-merge layout: 2C, 4C, 8C, 8C
    cfg = dict(
        type='MultiTaskSegmentor',
        tasks=list(tasks),
        data_preprocessor=dict(type='MultiTaskDataPreProcessor', size_divisor=32),
        backbone=dict(type='DiTASKSwinTransformer', arch=TINY_ARCH, window_size=4, pretrain_img_size=64,
                      drop_path_rate=0.0,
                      adapter=dict(tessellation_size=8, task_tessellation_size=4, theta_init=theta_init)),
        decode_head=dict(type='MTLHRNetHead', in_channels=in_channels, projection_channels=(4, 4, 4, 4)),
        num_classes=dict(NUM_CLASSES))
    # the base config's loss_decode, with a test's entries merged per task as a config override would be
    loss_decode = kwargs.pop('loss_decode', {})
    if loss_decode is not None:
        cfg['loss_decode'] = {t: {**BASE_LOSS_DECODE.get(t, {}), **loss_decode.get(t, {})}
                              for t in {*BASE_LOSS_DECODE, *loss_decode}}
    cfg.update(kwargs)
    return cfg


def build_tiny_segmentor(**kwargs):
    init_default_scope('ditask_mm')
    torch.manual_seed(0)
    model = MODELS.build(tiny_segmentor_cfg(**kwargs))
    model.init_weights()
    return model


def make_sample(height, width, tasks=PASCAL_TASKS, seed=0, no_person=False, ori_shape=None):
    """A data sample with random targets of every task, as the packer would give."""
    g = torch.Generator().manual_seed(seed)
    sample = SegDataSample(metainfo=dict(ori_shape=ori_shape or (height, width), img_path=f'img{seed}.jpg'))
    if 'semseg' in tasks:
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 21, (1, height, width), generator=g))
    if 'human_parts' in tasks:
        parts = torch.randint(0, 7, (1, height, width), generator=g)
        sample.set_field(PixelData(data=torch.full_like(parts, 255) if no_person else parts), 'gt_human_parts')
    if 'sal' in tasks:
        sample.set_field(PixelData(data=(torch.rand(1, height, width, generator=g) > 0.7).float()), 'gt_saliency')
    if 'normals' in tasks:
        normals = torch.nn.functional.normalize(torch.randn(3, height, width, generator=g), dim=0)
        normals[:, :2, :] = 255  # invalid rows
        sample.set_field(PixelData(data=normals), 'gt_normals')
    if 'depth' in tasks:
        depth = torch.rand(1, height, width, generator=g) * 5
        depth[:, 0] = 0  # invalid
        sample.set_field(PixelData(data=depth), 'gt_depth')
    if 'edge' in tasks:
        sample.set_field(PixelData(data=(torch.rand(1, height, width, generator=g) > 0.9).float()), 'gt_edge')
    return sample


def make_batch(sizes=((64, 48), (56, 64)), tasks=PASCAL_TASKS, **kwargs):
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]
    samples = [make_sample(h, w, tasks, seed=i, **kwargs) for i, (h, w) in enumerate(sizes)]
    return dict(inputs=inputs, data_samples=samples)
