"""Geometric augmentation, ignore regions and packing for multi-task targets."""
import random

import numpy as np
import pytest
import torch

import ditask_mm  # noqa: F401
from ditask_mm.datasets.transforms.formatting import PackMultiTaskInputs
from ditask_mm.datasets.transforms.geometric import FixedResizeMTL, RandomFlipMTL, ScaleRotateMTL
from ditask_mm.datasets.transforms.ignore_regions import AddIgnoreRegions
from ditask_mm.datasets.transforms.resize_crop import RandomCropMTL, RandomResizeMTL

KEYS = ['gt_sem_seg', 'gt_human_parts', 'gt_saliency', 'gt_normals', 'gt_depth', 'gt_edge']


def make_results(h=20, w=30, seed=0):
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(h, w, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[0, 0] = 0  # invalid
    return dict(img=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                gt_sem_seg=rng.integers(0, 21, (h, w)).astype(np.uint8),
                gt_human_parts=rng.integers(0, 7, (h, w)).astype(np.uint8),
                gt_saliency=(rng.random((h, w)) > 0.5).astype(np.float32),
                gt_normals=normals,
                gt_depth=(rng.random((h, w)) * 5 + 0.5).astype(np.float32),
                gt_edge=(rng.random((h, w)) > 0.9).astype(np.float32),
                seg_fields=list(KEYS), img_path='x.jpg', ori_shape=(h, w), img_shape=(h, w))


def test_flip_mirrors_everything_and_negates_nx():
    results = make_results()
    original = {k: v.copy() for k, v in results.items() if isinstance(v, np.ndarray)}
    out = RandomFlipMTL(prob=1.0)(results)
    assert out['flip'] is True
    for key in ['img', *KEYS]:
        expected = original[key][:, ::-1]
        if key == 'gt_normals':
            expected = expected * np.array([-1, 1, 1], dtype=np.float32)
        np.testing.assert_array_equal(out[key], expected)
    same = RandomFlipMTL(prob=0.0)(make_results())
    np.testing.assert_array_equal(same['gt_normals'], make_results()['gt_normals'])


def test_rotation_turns_normals_with_the_image():
    # a field of normals pointing right (+x), rotated 90° counter-clockwise like the image,
    # must point up (−y in image coordinates)
    results = make_results(21, 21)
    results['gt_normals'][:] = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    out = ScaleRotateMTL(rotation=(90.0, 90.0), scale=(1.0, 1.0))(results)
    np.testing.assert_allclose(out['gt_normals'][10, 10], [0.0, -1.0, 0.0], atol=1e-5)
    # and the image content moves the same way: the right edge goes to the top
    marker = make_results(21, 21)
    marker['img'][:] = 0
    marker['img'][10, 18] = 255
    rotated = ScaleRotateMTL(rotation=(90.0, 90.0), scale=(1.0, 1.0))(marker)['img']
    row, col = np.unravel_index(rotated[..., 0].argmax(), rotated.shape[:2])
    assert col == 10 and row < 10


def test_zoom_divides_depth_and_zero_fills_borders():
    results = make_results(20, 20)
    results['gt_depth'][:] = 4.0
    out = ScaleRotateMTL(rotation=(0.0, 0.0), scale=(2.0, 2.0))(results)
    assert np.allclose(out['gt_depth'], 2.0)  # zoom in 2×: everything twice as close
    zoom_out = ScaleRotateMTL(rotation=(0.0, 0.0), scale=(0.5, 0.5))(make_results(20, 20))
    assert (zoom_out['gt_sem_seg'][0] == 0).all() and (zoom_out['img'][0] == 0).all()
    assert (zoom_out['gt_normals'][0] == 0).all() and (zoom_out['gt_depth'][0] == 0).all()
    identity = ScaleRotateMTL(rotation=(0.0, 0.0), scale=(1.0, 1.0))(make_results())
    np.testing.assert_array_equal(identity['gt_sem_seg'], make_results()['gt_sem_seg'])
    np.testing.assert_allclose(identity['gt_normals'], make_results()['gt_normals'], atol=1e-6)
    random.seed(0)
    discrete = {ScaleRotateMTL(rotation=(0, 0, 0), scale=(1.0, 1.2, 1.5))(make_results())['rotation_scale']
                for _ in range(30)}
    assert discrete <= {1.0, 1.2, 1.5} and len(discrete) > 1


def test_fixed_resize_is_anisotropic_and_renormalises_normals():
    out = FixedResizeMTL(size=(32, 16))(make_results(20, 30))
    for key in ['img', *KEYS]:
        assert out[key].shape[:2] == (32, 16), key
    norms = np.linalg.norm(out['gt_normals'], axis=-1)
    valid = norms > 0
    np.testing.assert_allclose(norms[valid], 1.0, atol=1e-5)
    assert set(np.unique(out['gt_sem_seg'])) <= set(np.unique(make_results(20, 30)['gt_sem_seg']))
    assert out['img_shape'] == (32, 16) and out['ori_shape'] == (20, 30)
    at_resized = FixedResizeMTL(size=(32, 16), eval_at_resized=True)(make_results(20, 30))
    assert at_resized['ori_shape'] == (32, 16)
    image_only = FixedResizeMTL(size=(32, 16), resize_targets=False)(make_results(20, 30))
    assert image_only['img'].shape[:2] == (32, 16) and image_only['gt_sem_seg'].shape == (20, 30)
    with pytest.raises(ValueError, match='eval_at_resized=True needs resize_targets=True'):
        FixedResizeMTL(resize_targets=False, eval_at_resized=True)


def test_ignore_regions():
    results = make_results()
    results['gt_depth'][1, 1] = 0
    out = AddIgnoreRegions()(results)
    assert (out['gt_normals'][0, 0] == 255).all() and (out['gt_normals'][1, 1] != 255).all()
    assert out['gt_depth'][1, 1] == 255 and out['gt_depth'][2, 2] != 255
    assert out['gt_human_parts'].max() < 7  # has parts: untouched
    no_person = make_results()
    no_person['gt_human_parts'][:] = 0
    assert (AddIgnoreRegions()(no_person)['gt_human_parts'] == 255).all()


def test_pack_gives_each_target_its_dtype_and_layout():
    packed = PackMultiTaskInputs()(AddIgnoreRegions()(make_results(20, 30)))
    sample = packed['data_samples']
    assert packed['inputs'].shape == (3, 20, 30) and packed['inputs'].dtype == torch.uint8
    assert sample.gt_sem_seg.data.dtype == torch.int64 and sample.gt_sem_seg.data.shape == (1, 20, 30)
    assert sample.gt_human_parts.data.dtype == torch.int64
    assert sample.gt_normals.data.shape == (3, 20, 30) and sample.gt_normals.data.dtype == torch.float32
    for key in ('gt_saliency', 'gt_depth', 'gt_edge'):
        assert sample.get(key).data.shape == (1, 20, 30) and sample.get(key).data.dtype == torch.float32
    assert sample.img_path == 'x.jpg' and sample.ori_shape == (20, 30)
    bad = make_results()
    bad['seg_fields'].append('gt_seg_map')
    bad['gt_seg_map'] = bad['gt_sem_seg']
    with pytest.raises(KeyError, match="'gt_seg_map', which is no task target"):
        PackMultiTaskInputs()(bad)


def test_random_resize_and_crop_keep_targets_consistent():
    random.seed(1)
    results = make_results(40, 60)
    results['gt_depth'][:] = 3.0
    out = RandomResizeMTL(scale=(120, 80), ratio_range=(1.0, 1.0))(results)
    assert out['img'].shape[:2] == (80, 120)  # ×2, aspect kept
    np.testing.assert_allclose(out['gt_depth'], 1.5)
    norms = np.linalg.norm(out['gt_normals'], axis=-1)
    np.testing.assert_allclose(norms[norms > 0], 1.0, atol=1e-6)  # nearest: still unit vectors
    cropped = RandomCropMTL(crop_size=(64, 128))(out)  # wider than the image: padded first
    assert all(cropped[k].shape[:2] == (64, 128) for k in ['img', *KEYS])
    assert (cropped['gt_sem_seg'][:, 120:] == 255).all() and (cropped['gt_normals'][:, 120:] == 0).all()
    assert (cropped['gt_depth'][:, 120:] == 0).all()


def test_cat_max_ratio_avoids_single_class_crops():
    random.seed(0)
    results = make_results(40, 40)
    results['gt_sem_seg'][:] = 1
    results['gt_sem_seg'][:, 20:] = np.arange(20)[None] % 5 + 2
    hits = 0
    for _ in range(20):
        crop = RandomCropMTL(crop_size=(10, 10), cat_max_ratio=0.75)(
            {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in results.items()})
        labels, counts = np.unique(crop['gt_sem_seg'], return_counts=True)
        hits += counts.max() / counts.sum() < 0.75
    assert hits >= 15


def test_photometric_distortion_leaves_targets_alone():
    from mmengine.registry import init_default_scope

    from ditask_mm.registry import TRANSFORMS
    import mmseg.datasets  # noqa: F401  (registers PhotoMetricDistortion)
    init_default_scope('ditask_mm')
    results = make_results()
    before = {k: results[k].copy() for k in KEYS}
    out = TRANSFORMS.build(dict(type='PhotoMetricDistortion'))(results)
    for key in KEYS:
        np.testing.assert_array_equal(out[key], before[key])
