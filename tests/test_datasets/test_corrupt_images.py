"""A corrupt, truncated or empty image names its file, index and split, and is never skipped.

With OpenCV 5.0, ``cv2.imdecode`` returns None for a JPEG cut after its
header (even one missing only its end-of-image marker), so mmcv's loader
fails on a truncated file exactly as on garbage bytes (``AssertionError:
failed to load image``); both are tested. An empty file makes
``cv2.imdecode`` raise ``cv2.error``, which ``LoadImageFromFile(ignore_empty=True)``
turns into None: mmengine then trained on another image without a word.
"""
import os
import shutil

import cv2
import pytest
from mmcv.transforms import LoadImageFromFile

from ditask_mm.datasets import (CorruptImageError, MalformedFileError, NYUDMTLDataset, PascalContextMTLDataset,
                                SkippedSampleError)
from ditask_mm.datasets.synthetic import generate
from ditask_mm.datasets.transforms import LoadMultiTaskAnnotations


@pytest.fixture(scope='module')
def clean(tmp_path_factory):
    base = tmp_path_factory.mktemp('corrupt')
    return {name: generate(name, str(base / name), num_train=3, num_val=2, size=(48, 64), seed=1)
            for name in ('pascal', 'nyud')}


@pytest.fixture
def pascal(clean, tmp_path):
    root = tmp_path / 'P'
    shutil.copytree(clean['pascal'].root, root)
    return clean['pascal'], str(root)


def build(cls, root, split, test_mode=False, **loader):
    return cls(root, split, pipeline=[LoadImageFromFile(**loader), LoadMultiTaskAnnotations()],
               test_mode=test_mode, serialize_data=False)


def garbage(path):
    with open(path, 'wb') as f:
        f.write(b'this is not a JPEG file' * 20)


def truncate(path):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


def empty(path):
    open(path, 'wb').close()


@pytest.mark.parametrize('damage, cause', [(garbage, AssertionError), (truncate, AssertionError),
                                           (empty, cv2.error)], ids=['garbage', 'truncated', 'empty'])
@pytest.mark.parametrize('test_mode', [False, True])
def test_corrupt_jpeg_names_file_index_and_split(pascal, damage, cause, test_mode):
    tree, root = pascal
    index = 1
    img_id = tree.splits['val'][index]
    path = os.path.join(root, 'JPEGImages', f'{img_id}.jpg')
    damage(path)
    ds = build(PascalContextMTLDataset, root, 'val', test_mode=test_mode)
    assert ds.get_data_info(index)['img_path'] == path
    ds[0]  # the other images still load
    with pytest.raises(CorruptImageError) as info:
        ds[index]   # in training mode mmengine would otherwise draw another index
    message = str(info.value)
    assert path in message and f'index {index}' in message and "split 'val'" in message
    assert img_id in message and 're-extract it from the dataset archive' in message
    assert isinstance(info.value.__cause__, cause)  # mmcv's "failed to load image" or cv2's error, chained


def test_ignore_empty_loader_raises_instead_of_skipping(clean, tmp_path):
    """``LoadImageFromFile(ignore_empty=True)`` returns None; mmengine silently trained on another image."""
    tree = clean['nyud']
    root = str(tmp_path / 'N')
    shutil.copytree(tree.root, root)
    img_id = tree.splits['train'][2]
    path = os.path.join(root, 'images', f'{img_id}.jpg')
    empty(path)
    ds = build(NYUDMTLDataset, root, 'train', ignore_empty=True)
    with pytest.raises(CorruptImageError) as info:
        ds[2]
    message = str(info.value)
    assert path in message and 'index 2' in message and "split 'train'" in message and 'returned None' in message


def test_annotation_errors_keep_their_message_and_get_the_index(pascal):
    tree, root = pascal
    img_id = tree.splits['train'][2]
    sal = os.path.join(root, 'sal_distill', f'{img_id}.png')
    garbage(sal)
    ds = build(PascalContextMTLDataset, root, 'train')
    with pytest.raises(MalformedFileError) as info:
        ds[2]
    assert not isinstance(info.value, CorruptImageError)
    assert str(info.value).startswith(f'{sal}: cannot be decoded as an image')
    assert any('index 2' in note and "split 'train'" in note for note in info.value.__notes__)


def test_a_transform_returning_none_is_not_skipped(clean):
    ds = PascalContextMTLDataset(clean['pascal'].root, 'train', serialize_data=False,
                                 pipeline=[LoadImageFromFile(), lambda results: None])
    with pytest.raises(SkippedSampleError, match="index 0 .*of split 'train'"):
        ds[0]
