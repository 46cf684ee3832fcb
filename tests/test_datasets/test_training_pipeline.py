"""A generated PASCAL_MT tree of 8 images through the full training pipeline and the model."""
import copy
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

import ditask_mm.datasets  # noqa: F401
import ditask_mm.models  # noqa: F401
from ditask_mm.datasets.synthetic import generate
from ditask_mm.registry import DATASETS, MODELS

REPO = Path(__file__).resolve().parents[2]


def test_generated_tree_through_the_train_pipeline_and_a_loss_step(tmp_path):
    root = str(tmp_path / 'PASCAL_MT')
    generate('pascal', root, num_train=8, num_val=2, size=(64, 80), seed=3)
    cfg = Config.fromfile(str(REPO / 'configs/ditask/swin-t_synthetic-mtl_quick.py'))
    init_default_scope('ditask_mm')
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.data_root = root
    dataset = DATASETS.build(dataset_cfg)
    assert len(dataset) == 8
    samples = [dataset[i] for i in range(8)]
    for item in samples:
        sample = item['data_samples']
        assert item['inputs'].shape == (3, 128, 128) and item['inputs'].dtype == torch.uint8
        assert sample.gt_sem_seg.data.shape == (1, 128, 128) and sample.gt_sem_seg.data.dtype == torch.int64
        labels = set(sample.gt_sem_seg.data.unique().tolist())
        assert labels <= set(range(21)) | {255}
        parts = sample.gt_human_parts.data
        assert set(parts.unique().tolist()) <= set(range(7)) | {255}
        assert ((parts == 255).all() or (parts != 255).all())  # whole image ignored, or not at all
        normals = sample.gt_normals.data
        invalid = (normals == 255).all(0)
        norms = normals.norm(dim=0)[~invalid]
        # renormalised n/(|n|+eps): unit length except a few near-zero vectors that cubic
        # resampling creates at validity borders (as in the reference)
        assert norms.max() <= 1 + 1e-4 and ((norms - 1).abs() < 1e-3).float().mean() > 0.98
        assert set(sample.gt_saliency.data.unique().tolist()) <= {0.0, 1.0}
    # the set contains both images with and without usable human parts
    ignored = [bool((s['data_samples'].gt_human_parts.data == 255).all()) for s in samples]
    assert any(ignored) and not all(ignored)
    # and one batch trains a tiny model
    from ..test_models.test_segmentors.utils import tiny_segmentor_cfg
    model = MODELS.build(tiny_segmentor_cfg())
    batch = model.data_preprocessor(pseudo_collate(samples[:4]), training=True)
    losses = model(**batch, mode='loss')
    assert all(np.isfinite(v.item()) for v in losses.values())
