"""PASCAL_MT dataset-side edge cases (docs/datasets.md, Metrics M7)."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import scipy.io
from mmcv.transforms import LoadImageFromFile
from PIL import Image

from ditask_mm.datasets import PascalContextMTLDataset, synthetic
from ditask_mm.datasets.constants import CONTEXT_IDS, NORMALS_VALID_CONTEXT_IDS
from ditask_mm.datasets.transforms import LoadMultiTaskAnnotations
from ditask_mm.datasets.transforms.loading import decode_saliency, label_map_edges, thin


def pascal_dataset(*args, **kwargs):
    """The dataset without mmengine's serialisation (its gc.collect costs ~0.2 s per build)."""
    return PascalContextMTLDataset(*args, serialize_data=False, **kwargs)


ALL = ('semseg', 'human_parts', 'sal', 'normals', 'edge')


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    return synthetic.generate('pascal', tmp_path_factory.mktemp('p') / 'PASCAL_MT', 6, 6, (48, 64), seed=11)


@pytest.fixture
def copy(tree, tmp_path):
    root = tmp_path / 'PASCAL_MT'
    shutil.copytree(tree.root, root)
    return str(root)


def by_scenario(tree, scenario, split='train'):
    return next(i for i in tree.splits[split] if tree.info[i]['scenario'] == scenario)


def load(root, tasks=ALL, split='train', **kwargs):
    ds = pascal_dataset(root, split, tasks=tasks,
                        pipeline=[LoadImageFromFile(), LoadMultiTaskAnnotations()], **kwargs)
    return {ds.get_data_info(i)['img_id']: ds[i] for i in range(len(ds))}


def save_anno(path, objects, imname='x'):
    """A PASCAL-Part .mat: objects = [(class_ind, mask, parts or None)], parts = [(name, mask)]."""
    def struct(fields, rows):
        array = np.empty((1, len(rows)), dtype=[(f, 'O') for f in fields])
        for j, row in enumerate(rows):
            array[0, j] = row
        return array
    rows = []
    for c, m, parts in objects:
        parts_array = np.zeros((0, 0)) if parts is None else struct(
            ('part_name', 'mask'), [(n, pm.astype(np.uint8)) for n, pm in parts])
        rows.append(('person' if c == 15 else 'dog', np.array([[float(c)]]), m.astype(np.uint8), parts_array))
    scipy.io.savemat(path, {'anno': struct(('imname', 'objects'),
                                           [(imname, struct(('class', 'class_ind', 'mask', 'parts'), rows))])})


# ---------------------------------------------------------------- semseg
def test_voc12_png_takes_precedence(tree):
    samples = load(tree.root, ('semseg',))
    voc_ids = [i for i in samples if tree.info[i]['voc12']]
    assert voc_ids
    for img_id in voc_ids:
        assert samples[img_id]['sem_seg_path'].endswith(os.path.join('semseg', 'VOC12', f'{img_id}.png'))
        assert (samples[img_id]['gt_sem_seg'] == 255).any()  # the VOC12 void border, not in the Context PNG
        context = np.array(Image.open(os.path.join(tree.root, 'semseg', 'pascal-context', f'{img_id}.png')))
        assert 255 not in context
    other = next(i for i in samples if not tree.info[i]['voc12'])
    assert samples[other]['sem_seg_path'].endswith(os.path.join('semseg', 'pascal-context', f'{other}.png'))


# ---------------------------------------------------------------- human parts
def test_parts_flags_and_maps_per_scenario(tree):
    samples = load(tree.root)
    for scenario, flagged, has_parts in [('person_parts', True, True), ('person_no_parts', True, False),
                                         ('no_person', False, False), ('zero_area_person', False, False),
                                         ('two_persons', True, True)]:
        sample = samples[by_scenario(tree, scenario)]
        assert sample['has_human_parts'] is flagged, scenario
        assert sample['gt_human_parts'].any() == has_parts, scenario
    person = samples[by_scenario(tree, 'person_parts')]
    assert set(np.unique(person['gt_human_parts'])) == set(range(7))
    # person pixels that no part covers stay background 0 (the generator's belt)
    assert ((person['gt_sem_seg'] == 15) & (person['gt_human_parts'] == 0)).any()
    assert not ((person['gt_sem_seg'] != 15) & (person['gt_human_parts'] > 0)).any()


def test_overlapping_parts_last_written_wins_and_only_persons_count(copy):
    img_id = sorted(os.listdir(os.path.join(copy, 'JPEGImages')))[0][:-4]
    h, w = cv2.imread(os.path.join(copy, 'JPEGImages', f'{img_id}.jpg')).shape[:2]
    person = np.zeros((h, w), bool)
    person[5:30, 10:30] = True
    head, torso, arm = (np.zeros((h, w), bool) for _ in range(3))
    head[5:15, 15:25] = True
    torso[12:25, 10:30] = True   # overlaps the head: written later, wins
    arm[20:30, 10:14] = True     # overlaps the torso: written later, wins
    dog = np.zeros((h, w), bool)
    dog[35:45, 40:60] = True
    save_anno(os.path.join(copy, 'human_parts', f'{img_id}.mat'),
              [(12, dog, [('muzzle', dog), ('head', dog)]),   # non-person parts are ignored
               (15, person, [('head', head), ('torso', torso), ('luarm', arm)])])
    os.remove(os.path.join(copy, 'ImageSets', 'Parts', 'train.txt'))
    parts = load(copy, ('human_parts',), parts_only_filter=False)[img_id]['gt_human_parts']
    expected = np.zeros((h, w), np.uint8)
    expected[head], expected[torso], expected[arm] = 1, 2, 3
    np.testing.assert_array_equal(parts, expected)
    assert parts[12, 20] == 2 and parts[22, 11] == 3 and parts[7, 16] == 1 and parts[28, 20] == 0


def test_unknown_person_part_name_is_an_error_naming_the_file(copy):
    img_id = sorted(os.listdir(os.path.join(copy, 'JPEGImages')))[0][:-4]
    mask = np.ones((8, 8), bool)
    path = os.path.join(copy, 'human_parts', f'{img_id}.mat')
    save_anno(path, [(15, mask, [('tail', mask)])])
    ds = pascal_dataset(copy, 'train', tasks=('human_parts',), parts_only_filter=False,
                        pipeline=[LoadMultiTaskAnnotations()])
    index = [ds.get_data_info(i)['img_id'] for i in range(len(ds))].index(img_id)
    with pytest.raises(KeyError, match='tail') as info:
        ds[index]
    assert path in str(info.value)


def test_parts_only_subset_drops_unflagged_images(tree):
    flagged = [i for i in tree.splits['train'] if tree.info[i]['has_human_parts']]
    assert 0 < len(flagged) < 6
    only = pascal_dataset(tree.root, 'train', tasks=('human_parts',))
    assert [only.get_data_info(i)['img_id'] for i in range(len(only))] == flagged
    kept = pascal_dataset(tree.root, 'train', tasks=('human_parts',), parts_only_filter=False)
    assert len(kept) == 6
    assert len(pascal_dataset(tree.root, 'train', tasks=('human_parts', 'sal'))) == 6


def test_flags_from_mat_files_match_the_shipped_cache(copy, tmp_path, tree):
    shutil.rmtree(os.path.join(copy, 'ImageSets', 'Parts'))
    cache_dir = tmp_path / 'cache'
    ds = pascal_dataset(copy, 'train', tasks=('human_parts', 'semseg'), cache_dir=cache_dir)
    flags = {ds.get_data_info(i)['img_id']: ds.get_data_info(i)['has_human_parts'] for i in range(len(ds))}
    assert flags == {i: tree.info[i]['has_human_parts'] for i in tree.splits['train']}
    written = list(cache_dir.iterdir())
    assert len(written) == 1 and not written[0].name.startswith('.')
    assert json.loads(written[0].read_text()) == {i: tree.info[i]['classes'] for i in tree.splits['train']}
    # the cache is used: break a .mat, flags still come from the cache
    with open(os.path.join(copy, 'human_parts', f'{tree.splits["train"][0]}.mat'), 'wb') as f:
        f.write(b'garbage')
    again = pascal_dataset(copy, 'train', tasks=('human_parts', 'semseg'), cache_dir=cache_dir)
    assert len(again) == len(ds)


def test_cache_dir_inside_data_root_is_refused(copy):
    with pytest.raises(ValueError, match='inside data_root'):
        pascal_dataset(copy, 'train', tasks=('human_parts',), cache_dir=os.path.join(copy, 'cache'))


# ---------------------------------------------------------------- normals
def test_normals_validity_from_the_label_map(tree):
    samples = load(tree.root, ('normals',), split='val') | load(tree.root, ('normals',))
    seen = set()
    for img_id, sample in samples.items():
        label_map = tree.targets[img_id]['label_map']
        zero = ~np.abs(sample['gt_normals']).any(-1)
        valid = np.isin(label_map, list(NORMALS_VALID_CONTEXT_IDS))
        np.testing.assert_array_equal(zero, ~valid)
        for name in ('sky', 'wall', 'floor', 'ceiling', 'person'):
            if (label_map == CONTEXT_IDS[name]).any():
                seen.add(name)
                assert zero[label_map == CONTEXT_IDS[name]].all() == (name == 'sky'), name
        if (label_map == 0).any():
            seen.add('unlabeled')
            assert zero[label_map == 0].all()
    assert seen == {'sky', 'wall', 'floor', 'ceiling', 'person', 'unlabeled'}


# ---------------------------------------------------------------- saliency
def test_saliency_threshold_is_128(tree, tmp_path):
    counts = np.zeros(2, int)
    for img_id in tree.splits['train']:
        png = tree.targets[img_id]['saliency_png']
        sal = decode_saliency(os.path.join(tree.root, 'sal_distill', f'{img_id}.png'))
        assert not sal[png == 127].any() and sal[png == 128].all()
        counts += [(png == 127).sum(), (png == 128).sum()]
    assert counts.min() > 0
    path = str(tmp_path / 's.png')
    Image.fromarray(np.array([[0, 127, 128, 255]], np.uint8)).save(path)
    np.testing.assert_array_equal(decode_saliency(path), [[0, 0, 1, 1]])


# ---------------------------------------------------------------- edges
def test_laplacian_cancellation_gives_no_edge():
    label_map = np.full((5, 5), 2, np.uint16)
    label_map[1, 2], label_map[2, 1] = 1, 3      # centre 2: up 1, left 3, right 2, down 2
    assert cv2.Laplacian(label_map, cv2.CV_64F)[2, 2] == 0
    edges = label_map_edges(label_map)
    assert edges[2, 2] == 0 and edges[1, 2] == 1  # "any neighbour differs" would mark the centre
    assert edges.dtype == np.float32


def test_label_map_dtypes_give_identical_edges(copy):
    rng = np.random.default_rng(0)
    label_map = cv2.resize(rng.integers(1, 459, (6, 8)).astype(np.uint16), (32, 24),
                           interpolation=cv2.INTER_NEAREST)
    expected = label_map_edges(label_map)
    assert expected.any()
    for dtype in (np.int32, np.float32, np.int64, np.float64, np.int16):
        np.testing.assert_array_equal(label_map_edges(label_map.astype(dtype)), expected, err_msg=str(dtype))
    np.testing.assert_array_equal(label_map_edges((label_map % 200).astype(np.uint8)),
                                  label_map_edges((label_map % 200).astype(np.int32)))
    # through the loader: an int32 LabelMap file (cv2.Laplacian rejects int32 with CV_64F)
    img_id = sorted(os.listdir(os.path.join(copy, 'JPEGImages')))[0][:-4]
    path = os.path.join(copy, 'pascal-context', 'trainval', f'{img_id}.mat')
    original = scipy.io.loadmat(path)['LabelMap']
    scipy.io.savemat(path, {'LabelMap': original.astype(np.int32)})
    edge = load(copy, ('edge',))[img_id]['gt_edge']
    np.testing.assert_array_equal(edge, label_map_edges(original))


# skimage.morphology.thin (0.26) outputs on these inputs, recorded once.
THIN_CASES = [
    ([[0, 0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1, 0], [0, 1, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 0],
      [0, 1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0]],
     [[0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0], [0, 1, 0, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0],
      [0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]]),
    ([[0] * 11, [0] * 11, [0] + [1] * 9 + [0], [0] + [1] * 9 + [0], [0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0],
      [0] + [1] * 9 + [0], [0] + [1] * 9 + [0], [0] * 11, [0] * 11],
     [[0] * 11, [0] * 11, [0] * 11, [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0],
      [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], [0] * 11, [0] * 11, [0] * 11]),
]
# thin(|Laplacian(label_map)| > 0) for this map, from skimage 0.26 + cv2.
EDGE_LABEL_MAP = [[1, 1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 2, 2, 2, 2], [1, 1, 3, 3, 3, 2, 2, 2],
                  [1, 1, 3, 3, 3, 3, 2, 2], [1, 1, 3, 3, 3, 3, 2, 2], [4, 4, 4, 4, 4, 4, 4, 4],
                  [4, 4, 4, 4, 4, 4, 4, 4]]
EDGE_EXPECTED = [[0, 0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0, 0],
                 [0, 0, 1, 0, 0, 1, 0, 0], [0, 1, 1, 0, 1, 0, 1, 0], [0, 0, 0, 1, 1, 1, 0, 0],
                 [0, 0, 0, 0, 0, 0, 0, 0]]


@pytest.mark.parametrize('image, expected', THIN_CASES)
def test_thin_matches_recorded_skimage_output(image, expected):
    np.testing.assert_array_equal(thin(np.array(image)), np.array(expected, bool))


# At the border the Laplacian reflects without repeating the edge pixel (reflect-101): at (0, 2),
# 3 + 3 + 2·1 − 4·2 = 0, no edge; a replicated border would give 1 there and a different thinning.
BORDER_LABEL_MAP = [[3, 3, 2, 3, 3, 3], [3, 3, 1, 3, 3, 3], [3, 3, 3, 3, 3, 3], [3, 3, 3, 3, 3, 3],
                    [3, 3, 3, 3, 3, 7]]
BORDER_EXPECTED = [[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1],
                   [0, 0, 0, 0, 1, 0]]


@pytest.mark.parametrize('label_map, expected', [(EDGE_LABEL_MAP, EDGE_EXPECTED),
                                                 (BORDER_LABEL_MAP, BORDER_EXPECTED)])
def test_label_map_edges_match_recorded_reference(label_map, expected):
    np.testing.assert_array_equal(label_map_edges(np.array(label_map, np.uint16)), expected)


def test_thin_properties():
    rng = np.random.default_rng(1)
    line = np.zeros((9, 9), bool)
    line[4, 1:8] = True
    np.testing.assert_array_equal(thin(line), line)            # already thin: unchanged
    for _ in range(20):
        mask = cv2.dilate((rng.random((30, 30)) < 0.02).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        out = thin(mask)
        assert not (out & ~mask).any()                          # only deletes
        np.testing.assert_array_equal(thin(out), out)           # idempotent
        count = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0]
        assert cv2.connectedComponents(out.astype(np.uint8), connectivity=8)[0] == count  # topology kept


# ---------------------------------------------------------------- read-only data_root
def snapshot(root):
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.stat(path)
            state[os.path.relpath(path, root)] = (st.st_mtime_ns, st.st_size)
    state['.'] = os.stat(root).st_mtime_ns
    return state


def test_data_root_is_never_written(copy, tmp_path):
    shutil.rmtree(os.path.join(copy, 'ImageSets', 'Parts', ))
    os.makedirs(os.path.join(copy, 'ImageSets', 'Parts'))  # present but empty: the reference would write here
    before = snapshot(copy)
    for tasks in (ALL, ('human_parts',), ('semseg', 'edge')):
        for split in ('train', 'val', ['train', 'val']):
            samples = load(copy, tasks, split=split, cache_dir=tmp_path / 'cache')
            assert samples
    assert snapshot(copy) == before
    assert os.listdir(tmp_path / 'cache')
