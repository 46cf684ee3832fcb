"""Generate → load round trip: every loaded target equals what the generator intended."""
import hashlib
import os

import numpy as np
import pytest
import scipy.io
from mmcv.transforms import LoadImageFromFile

from ditask_mm.datasets import NYUDMTLDataset, PascalContextMTLDataset, synthetic
from ditask_mm.datasets.constants import CONTEXT_IDS
from ditask_mm.datasets.transforms import LoadMultiTaskAnnotations
from ditask_mm.datasets.transforms.loading import thin

SIZE = (48, 64)
GT_KEYS = {'semseg': 'gt_sem_seg', 'human_parts': 'gt_human_parts', 'sal': 'gt_saliency',
           'normals': 'gt_normals', 'depth': 'gt_depth', 'edge': 'gt_edge'}
DTYPES = {'gt_sem_seg': np.uint8, 'gt_human_parts': np.uint8, 'gt_saliency': np.float32,
          'gt_normals': np.float32, 'gt_depth': np.float32, 'gt_edge': np.float32}


def pipeline():
    return [LoadImageFromFile(), LoadMultiTaskAnnotations()]


@pytest.fixture(scope='module')
def pascal(tmp_path_factory):
    return synthetic.generate('pascal', tmp_path_factory.mktemp('p') / 'PASCAL_MT', 6, 6, SIZE, seed=7)


@pytest.fixture(scope='module')
def nyud(tmp_path_factory):
    return synthetic.generate('nyud', tmp_path_factory.mktemp('n') / 'NYUD_MT', 6, 6, SIZE, seed=7)


def reference_edges(label_map):
    """Independent PASCAL edge rule: 4-neighbour Laplacian, reflect-101 border, then thinning."""
    p = np.pad(label_map.astype(np.float64), 1, mode='reflect')  # numpy 'reflect' is reflect-101
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * p[1:-1, 1:-1]
    return thin(lap != 0).astype(np.float32)


def check_sample(sample, expected, tasks):
    assert sample['seg_fields'] == [GT_KEYS[t] for t in ('semseg', 'human_parts', 'sal', 'edge', 'normals',
                                                         'depth') if t in tasks]
    for task in tasks:
        key = GT_KEYS[task]
        got = sample[key]
        assert got.dtype == DTYPES[key], (task, got.dtype)
        assert got.shape[:2] == sample['img'].shape[:2], task
        np.testing.assert_array_equal(got, expected[task], err_msg=f'{sample["img_id"]} {task}')


@pytest.mark.parametrize('split', ['train', 'val'])
def test_pascal_round_trip(pascal, split):
    tasks = ('semseg', 'human_parts', 'sal', 'normals', 'edge')
    ds = PascalContextMTLDataset(pascal.root, split, tasks=tasks, pipeline=pipeline())
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == pascal.splits[split]
    for i in range(len(ds)):
        sample = ds[i]
        expected = dict(pascal.targets[sample['img_id']])
        expected['edge'] = reference_edges(expected['label_map'])
        assert sample['img'].shape[:2] == pascal.info[sample['img_id']]['size']
        assert sample['has_human_parts'] == pascal.info[sample['img_id']]['has_human_parts']
        check_sample(sample, expected, tasks)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_nyud_round_trip(nyud, split):
    ds = NYUDMTLDataset(nyud.root, split, pipeline=pipeline())
    assert ds.tasks == ('semseg', 'depth', 'normals', 'edge')
    assert len(ds) == 6
    for i in range(len(ds)):
        sample = ds[i]
        check_sample(sample, nyud.targets[sample['img_id']], ds.tasks)


def test_data_list_entries(pascal, nyud):
    entry = PascalContextMTLDataset(pascal.root, 'train', tasks=('semseg', 'human_parts', 'sal', 'normals',
                                                                 'edge')).get_data_info(0)
    assert set(entry) >= {'img_path', 'img_id', 'seg_fields', 'reduce_zero_label', 'sem_seg_path',
                          'human_parts_path', 'has_human_parts', 'saliency_path', 'normals_path',
                          'normals_label_map_path', 'edge_label_map_path'}
    assert entry['seg_fields'] == [] and entry['reduce_zero_label'] is False
    entry = PascalContextMTLDataset(pascal.root, 'train', tasks=('sal',), serialize_data=False).get_data_info(0)
    assert not {'sem_seg_path', 'human_parts_path', 'normals_path', 'edge_label_map_path'} & set(entry)
    entry = NYUDMTLDataset(nyud.root, 'val').get_data_info(0)
    assert set(entry) >= {'img_path', 'img_id', 'sem_seg_path', 'sem_seg_reduce_zero', 'depth_path',
                          'normals_path', 'edge_path'}
    assert entry['reduce_zero_label'] is False and entry['sem_seg_reduce_zero'] is True


def test_metainfo(pascal, nyud):
    meta = PascalContextMTLDataset(pascal.root, 'val', tasks=('semseg', 'sal'), serialize_data=False).metainfo
    assert len(meta['classes']) == 21 and meta['classes'][15] == 'person'
    assert len(meta['palette']) == 21 and len(meta['parts_classes']) == 7 and len(meta['parts_palette']) == 7
    assert meta['tasks'] == ('semseg', 'sal')
    meta = NYUDMTLDataset(nyud.root, 'val', tasks=('depth',), serialize_data=False).metainfo
    assert len(meta['classes']) == 40 and meta['classes'][39] == 'otherprop' and len(meta['palette']) == 40
    assert meta['tasks'] == ('depth',)


def tree_digest(root):
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()


@pytest.mark.parametrize('dataset', ['pascal', 'nyud'])
def test_generator_is_deterministic(tmp_path, dataset):
    trees = [synthetic.generate(dataset, tmp_path / name, 3, 2, (24, 32), seed=seed)
             for name, seed in (('a', 3), ('b', 3), ('c', 4))]
    digests = [tree_digest(t.root) for t in trees]
    assert digests[0] == digests[1] and digests[0] != digests[2]


def test_generator_covers_the_hard_cases(pascal, nyud):
    infos = list(pascal.info.values())
    assert {i['scenario'] for i in infos} == set(synthetic.PASCAL_SCENARIOS)
    sizes = [i['size'] for i in infos]
    assert any(h > w for h, w in sizes) and any(h < w for h, w in sizes)
    assert all(0.8 * SIZE[0] - 1 <= min(s) and max(s) <= 1.2 * SIZE[1] + 3 for s in sizes)
    assert any(i['voc12'] for i in infos) and not all(i['voc12'] for i in infos)
    assert any(i['has_sky'] for i in infos)
    for img_id, info in pascal.info.items():
        voc = os.path.join(pascal.root, 'semseg', 'VOC12', f'{img_id}.png')
        assert os.path.isfile(voc) == info['voc12']
        assert any(c not in (15, -1) for c in info['classes'])  # a non-person object in every .mat
        if info['scenario'] == 'no_person':
            assert not pascal.targets[img_id]['sal'].any()
    raw = np.concatenate([t['raw_segmentation'].ravel() for t in nyud.targets.values()])
    assert 0 in raw and 40 in raw and 255 not in raw
    assert all((t['depth'] == 0).any() for t in nyud.targets.values())
    assert all((np.abs(t['normals']).sum(-1) == 0).any() for t in nyud.targets.values())


def test_generated_files_follow_the_reference_layout(pascal):
    img_id = next(i for i, info in pascal.info.items() if info['scenario'] == 'person_parts')
    mat = scipy.io.loadmat(os.path.join(pascal.root, 'human_parts', f'{img_id}.mat'))
    anno = mat['anno']
    assert anno.dtype.names == ('imname', 'objects')
    objects = anno[0][0][1][0]  # the reference's positional access
    assert objects.dtype.names == ('class', 'class_ind', 'mask', 'parts')
    person = next(o for o in objects if o[1][0][0] == 15)
    assert person[0][0] == 'person' and person[2].dtype == np.uint8
    assert person[3].dtype.names == ('part_name', 'mask')
    assert person[3][0][0][0][0] == 'head'
    label_map = scipy.io.loadmat(os.path.join(pascal.root, 'pascal-context', 'trainval', f'{img_id}.mat'))
    assert label_map['LabelMap'].dtype == np.uint16
    assert CONTEXT_IDS['person'] in label_map['LabelMap']
    for split, ids in pascal.splits.items():
        with open(os.path.join(pascal.root, 'ImageSets', 'Context', f'{split}.txt')) as f:
            assert f.read().splitlines() == ids
