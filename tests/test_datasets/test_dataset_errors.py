"""Task selection, missing and malformed files, label resizing, NYUD label decoding, registry build."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import scipy.io
from mmcv.transforms import LoadImageFromFile
from mmengine.registry import DefaultScope
from PIL import Image

import ditask_mm.datasets.transforms.loading as loading
from ditask_mm.datasets import (BaseMultiTaskDataset, MalformedFileError, NYUDMTLDataset, PascalContextMTLDataset,
                                synthetic)
from ditask_mm.datasets import base_multitask
from ditask_mm.datasets.transforms import LoadMultiTaskAnnotations
from ditask_mm.registry import DATASETS


def pascal_dataset(*args, **kwargs):
    """The dataset without mmengine's serialisation (its gc.collect costs ~0.2 s per build)."""
    return PascalContextMTLDataset(*args, serialize_data=False, **kwargs)


def nyud_dataset(*args, **kwargs):
    return NYUDMTLDataset(*args, serialize_data=False, **kwargs)


PIPELINE = [LoadImageFromFile(), LoadMultiTaskAnnotations()]


def test_base_class_lives_in_its_own_module_and_stays_public(tmp_path):
    assert BaseMultiTaskDataset is base_multitask.BaseMultiTaskDataset
    assert BaseMultiTaskDataset.__module__ == 'ditask_mm.datasets.base_multitask'
    assert issubclass(PascalContextMTLDataset, BaseMultiTaskDataset)
    assert issubclass(NYUDMTLDataset, BaseMultiTaskDataset)
    with pytest.raises(TypeError, match='abstract'):
        BaseMultiTaskDataset(str(tmp_path))  # a subclass must list the files (_entries)


@pytest.fixture(scope='module')
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp('trees')
    return {name: synthetic.generate(name, base / name, 4, 2, (40, 56), seed=5) for name in ('pascal', 'nyud')}


@pytest.fixture
def pascal(trees, tmp_path):
    shutil.copytree(trees['pascal'].root, tmp_path / 'P')
    return str(tmp_path / 'P')


@pytest.fixture
def nyud(trees, tmp_path):
    shutil.copytree(trees['nyud'].root, tmp_path / 'N')
    return str(tmp_path / 'N')


def first_id(root, split_dir):
    with open(os.path.join(root, split_dir, 'train.txt')) as f:
        return f.readline().strip()


# ---------------------------------------------------------------- tasks and roots
@pytest.mark.parametrize('cls, task', [(PascalContextMTLDataset, 'depth'), (PascalContextMTLDataset, 'segm'),
                                       (NYUDMTLDataset, 'human_parts'), (NYUDMTLDataset, 'sal')])
def test_task_not_in_dataset_is_a_key_error(trees, cls, task):
    root = trees['pascal' if cls is PascalContextMTLDataset else 'nyud'].root
    with pytest.raises(KeyError) as info:
        cls(root, 'train', tasks=(task, 'semseg'))
    message = str(info.value)
    assert repr(task) in message and repr(cls.AVAILABLE_TASKS[0]) in message and 'normals' in message


def test_missing_data_root_names_path_and_layout(tmp_path):
    missing = str(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match='nowhere') as info:
        pascal_dataset(missing)
    assert 'JPEGImages' in str(info.value)
    with pytest.raises(FileNotFoundError, match='gt_sets'):
        nyud_dataset(missing)


def test_missing_split_file_is_named(trees):
    with pytest.raises(FileNotFoundError, match=r'ImageSets/Context/test\.txt') as info:
        pascal_dataset(trees['pascal'].root, 'test')
    assert "'train'" in str(info.value)
    with pytest.raises(FileNotFoundError, match=r'gt_sets/test\.txt'):
        nyud_dataset(trees['nyud'].root, 'test')


def test_split_list_concatenates(trees):
    tree = trees['pascal']
    ds = pascal_dataset(tree.root, ['train', 'val'], tasks=('semseg',))
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == tree.splits['train'] + tree.splits['val']


# ---------------------------------------------------------------- missing files: fail fast, enabled tasks only
def test_missing_file_fails_at_construction_for_enabled_tasks_only(pascal):
    img_id = first_id(pascal, 'ImageSets/Context')
    sal = os.path.join(pascal, 'sal_distill', f'{img_id}.png')
    os.remove(sal)
    with pytest.raises(FileNotFoundError) as info:
        pascal_dataset(pascal, 'train', tasks=('semseg', 'sal'))
    assert sal in str(info.value) and '1 file(s) missing' in str(info.value)
    assert len(pascal_dataset(pascal, 'train', tasks=('semseg', 'normals', 'edge'))) == 4
    os.remove(os.path.join(pascal, 'pascal-context', 'trainval', f'{img_id}.mat'))
    for tasks in (('normals',), ('edge',)):
        with pytest.raises(FileNotFoundError, match=f'trainval/{img_id}.mat'):
            pascal_dataset(pascal, 'train', tasks=tasks)


def test_missing_files_are_listed_up_to_a_limit(nyud):
    shutil.rmtree(os.path.join(nyud, 'depth'))
    with pytest.raises(FileNotFoundError) as info:
        nyud_dataset(nyud, ['train', 'val'])
    message = str(info.value)
    listed = [line for line in message.splitlines() if line.strip().startswith(os.path.join(nyud, 'depth'))]
    assert '6 file(s) missing' in message and len(listed) == 5 and '... and 1 more' in message
    assert len(nyud_dataset(nyud, 'train', tasks=('semseg', 'edge'))) == 4


# ---------------------------------------------------------------- malformed files
def sample_of(ds, img_id):
    ids = [ds.get_data_info(i)['img_id'] for i in range(len(ds))]
    return ds[ids.index(img_id)]


def test_bad_parts_cache_json(pascal):
    path = os.path.join(pascal, 'ImageSets', 'Parts', 'train.txt')
    with open(path, 'w') as f:
        f.write('{"2008_000000": [15,')
    with pytest.raises(MalformedFileError, match='Parts/train.txt') as info:
        pascal_dataset(pascal, 'train', tasks=('human_parts',))
    assert 'JSON' in str(info.value)
    with open(path, 'w') as f:
        json.dump({'2008_000000': 'person'}, f)
    with pytest.raises(MalformedFileError, match='Parts/train.txt'):
        pascal_dataset(pascal, 'train', tasks=('human_parts',))


def test_mat_without_anno_or_labelmap(pascal):
    img_id = first_id(pascal, 'ImageSets/Context')
    os.remove(os.path.join(pascal, 'ImageSets', 'Parts', 'train.txt'))
    parts = os.path.join(pascal, 'human_parts', f'{img_id}.mat')
    scipy.io.savemat(parts, {'annotation': np.zeros((2, 2))})
    with pytest.raises(MalformedFileError, match='anno') as info:
        pascal_dataset(pascal, 'train', tasks=('human_parts',))
    assert parts in str(info.value)
    with open(parts, 'wb') as f:
        f.write(b'not a mat file at all')
    with pytest.raises(MalformedFileError, match=f'{img_id}.mat'):
        pascal_dataset(pascal, 'train', tasks=('human_parts',))
    label_map = os.path.join(pascal, 'pascal-context', 'trainval', f'{img_id}.mat')
    scipy.io.savemat(label_map, {'labels': np.ones((3, 3), np.uint16)})
    ds = pascal_dataset(pascal, 'train', tasks=('edge',), pipeline=PIPELINE)
    with pytest.raises(MalformedFileError, match='LabelMap') as info:
        sample_of(ds, img_id)
    assert label_map in str(info.value)


@pytest.mark.parametrize('folder, task, bad', [
    ('sal_distill', 'sal', np.zeros((40, 56, 3), np.uint8)),          # RGB saliency
    ('sal_distill', 'sal', 'palette'),                                 # palette saliency
    ('normals_distill', 'normals', np.zeros((40, 56), np.uint8)),     # single-channel normals
    ('semseg/pascal-context', 'semseg', np.zeros((40, 56, 3), np.uint8)),
])
def test_png_with_wrong_channels(pascal, folder, task, bad):
    img_id = first_id(pascal, 'ImageSets/Context')
    path = os.path.join(pascal, folder, f'{img_id}.png')
    if isinstance(bad, str):
        image = Image.fromarray(np.ones((40, 56), np.uint8))
        image.putpalette([0, 0, 0, 255, 255, 255])
    else:
        image = Image.fromarray(bad)
    image.save(path)
    if os.path.exists(os.path.join(pascal, 'semseg', 'VOC12', f'{img_id}.png')):
        os.remove(os.path.join(pascal, 'semseg', 'VOC12', f'{img_id}.png'))
    ds = pascal_dataset(pascal, 'train', tasks=(task,), pipeline=PIPELINE)
    with pytest.raises(MalformedFileError, match='PNG mode') as info:
        sample_of(ds, img_id)
    assert path in str(info.value)


@pytest.mark.parametrize('folder, bad, match', [
    ('depth', np.zeros((40, 56, 2), np.float32), 'depth map'),
    ('normals', np.zeros((40, 56), np.float32), 'HxWx3'),
    ('edge', np.full((40, 56), 255, np.float32), r'expected \{0, 1\}'),
    ('depth', np.array(['a']), 'depth map'),
])
def test_npy_with_wrong_shape_or_values(nyud, folder, bad, match):
    img_id = first_id(nyud, 'gt_sets')
    path = os.path.join(nyud, folder, f'{img_id}.npy')
    np.save(path, bad)
    ds = nyud_dataset(nyud, 'train', pipeline=PIPELINE)
    with pytest.raises(MalformedFileError, match=match) as info:
        sample_of(ds, img_id)
    assert path in str(info.value)


def test_corrupt_npy_and_nyud_png_with_255(nyud):
    img_id = first_id(nyud, 'gt_sets')
    with open(os.path.join(nyud, 'depth', f'{img_id}.npy'), 'wb') as f:
        f.write(b'\x93NUMPY garbage')
    with pytest.raises(MalformedFileError, match='depth'):
        sample_of(nyud_dataset(nyud, 'train', tasks=('depth',), pipeline=PIPELINE), img_id)
    path = os.path.join(nyud, 'segmentation', f'{img_id}.png')
    Image.fromarray(np.full((40, 56), 255, np.uint8)).save(path)
    with pytest.raises(MalformedFileError, match='255'):
        sample_of(nyud_dataset(nyud, 'train', tasks=('semseg',), pipeline=PIPELINE), img_id)


# ---------------------------------------------------------------- NYUD decoding
def test_nyud_semseg_shift(nyud):
    """0 (unlabeled) → 255, k → k − 1: 1 → 0, 40 → 39."""
    img_id = first_id(nyud, 'gt_sets')
    shape = Image.open(os.path.join(nyud, 'images', f'{img_id}.jpg')).size[::-1]
    raw = np.zeros(shape, np.uint8)
    raw[:, 10:20], raw[:, 20:30], raw[:, 30:] = 1, 40, 17
    Image.fromarray(raw).save(os.path.join(nyud, 'segmentation', f'{img_id}.png'))
    sem = sample_of(nyud_dataset(nyud, 'train', tasks=('semseg',), pipeline=PIPELINE), img_id)['gt_sem_seg']
    expected = np.full(shape, 255, np.uint8)
    expected[:, 10:20], expected[:, 20:30], expected[:, 30:] = 0, 39, 16
    np.testing.assert_array_equal(sem, expected)
    assert sem.dtype == np.uint8


# ---------------------------------------------------------------- resizing
def test_label_of_another_size_is_resized_with_a_warning(pascal, monkeypatch):
    img_id = first_id(pascal, 'ImageSets/Context')
    h, w = Image.open(os.path.join(pascal, 'JPEGImages', f'{img_id}.jpg')).size[::-1]
    sal = os.path.join(pascal, 'sal_distill', f'{img_id}.png')
    small = np.zeros((h // 2, w // 2), np.uint8)
    small[: h // 4] = 200
    Image.fromarray(small).save(sal)
    normals = os.path.join(pascal, 'normals_distill', f'{img_id}.png')
    yy, xx = np.mgrid[0:2 * h, 0:2 * w]
    big = np.stack([xx * 255 // (2 * w), yy * 255 // (2 * h), (xx * yy) % 256], -1).astype(np.uint8)
    Image.fromarray(big).save(normals)
    label_map = os.path.join(pascal, 'pascal-context', 'trainval', f'{img_id}.mat')
    scipy.io.savemat(label_map, {'LabelMap': np.full((h, w), 440, np.uint16)})   # wall: all valid
    messages = []
    monkeypatch.setattr(loading, 'print_log', lambda msg, **kw: messages.append((msg, kw.get('level'))))
    sample = sample_of(pascal_dataset(pascal, 'train', tasks=('sal', 'normals'), pipeline=PIPELINE), img_id)
    assert sample['gt_saliency'].shape == (h, w) and sample['gt_normals'].shape == (h, w, 3)
    assert sample['gt_saliency'][0].all() and not sample['gt_saliency'][-1].any()
    decoded = (2.0 * big / 255.0 - 1.0).astype(np.float32)
    np.testing.assert_allclose(sample['gt_normals'], cv2.resize(decoded, (w, h), interpolation=cv2.INTER_CUBIC),
                               atol=1e-6)
    for path in (sal, normals, label_map):
        assert any(path in m and 'resized' in m for m, _ in messages), path
    assert all(level == 30 for _, level in messages)   # logging.WARNING


# ---------------------------------------------------------------- transform and registry
def test_transform_rejects_a_task_without_source(trees):
    ds = pascal_dataset(trees['pascal'].root, 'train', tasks=('semseg',),
                        pipeline=[LoadImageFromFile(), LoadMultiTaskAnnotations(tasks=('depth',))])
    with pytest.raises(KeyError, match='depth'):
        ds[0]
    with pytest.raises(KeyError):
        LoadMultiTaskAnnotations(tasks=('depht',))


def test_build_from_config_in_the_ditask_mm_scope(trees):
    with DefaultScope.overwrite_default_scope('ditask_mm'):
        ds = DATASETS.build(dict(type='NYUDMTLDataset', data_root=trees['nyud'].root, split='val',
                                 tasks=['depth', 'semseg'],
                                 pipeline=[dict(type='LoadImageFromFile'),
                                           dict(type='LoadMultiTaskAnnotations')]))
        sample = ds[0]
    assert isinstance(ds, NYUDMTLDataset)
    assert sample['seg_fields'] == ['gt_sem_seg', 'gt_depth']
    assert sample['img'].dtype == np.uint8 and sample['img'].shape[2] == 3
