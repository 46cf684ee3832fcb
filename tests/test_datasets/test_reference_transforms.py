"""The public code's image and normals computations, reproduced exactly by the reference options.

The public DiTASK/MTLoRA pipeline reads the image with PIL as RGB float64,
flips/rotates/resizes it in float64 (cubic) and casts it once with
``astype(np.uint8)``, which truncates and wraps overshoot around; normals are
resized in float64 and renormalised with the float64 eps. Every expected value
below is computed independently of the project's transforms.
"""
import copy
import platform
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from ditask_mm.datasets import NYUDMTLDataset, PascalContextMTLDataset
from ditask_mm.datasets.synthetic import generate
from ditask_mm.datasets.transforms.geometric import FixedResizeMTL, renormalize
from ditask_mm.datasets.transforms.image_cast import (ImageToFloat64, round_clip_to_uint8,
                                                      truncate_wrap_to_uint8)
from ditask_mm.registry import DATASETS, TRANSFORMS

REPO = Path(__file__).resolve().parents[2]
PAPER_CONFIGS = [f'ditask/swin-{arch}_{data}-mtl.py' for arch in 'tsbl' for data in ('pascal', 'nyud')]
DOUBLE_EPS = 2.220446049250313e-16  # np.finfo(float).eps


def cubic64(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(image.astype(np.float64), (width, height), interpolation=cv2.INTER_CUBIC)


def modular_truncation(values: np.ndarray) -> np.ndarray:
    """x86-64 ``astype(np.uint8)``: drop the fraction (towards zero), keep the integer mod 256."""
    return (np.fix(values).astype(np.int64) % 256).astype(np.uint8)


def sharp_image(seed: int = 0) -> np.ndarray:
    """Blocks of black, white and grey: cubic resampling overshoots at their edges."""
    rng = np.random.default_rng(seed)
    blocks = rng.choice([0, 0, 255, 255, 40, 200], size=(9, 13, 3)).astype(np.uint8)
    image = cv2.resize(blocks, (52, 36), interpolation=cv2.INTER_NEAREST)
    noise = rng.integers(-3, 4, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def resized(image: np.ndarray, size, **kwargs) -> np.ndarray:
    return FixedResizeMTL(size=size, **kwargs)(dict(img=image.copy(), seg_fields=[]))['img']


def test_truncate_wrap_gives_the_documented_astype_values():
    values = np.array([-1.5, -0.7, 0.0, 0.99, 254.5, 255.9, 256.2, 257.9, 511.7, -255.5, -256.5, -300.2])
    expected = [255, 0, 0, 0, 254, 255, 0, 1, 255, 1, 0, 212]
    np.testing.assert_array_equal(truncate_wrap_to_uint8(values), expected)
    np.testing.assert_array_equal(round_clip_to_uint8(values), [0, 0, 0, 1, 254, 255, 255, 255, 255, 0, 0, 0])
    if platform.machine().lower() in ('x86_64', 'amd64'):  # where numpy's own cast wraps
        grid = np.linspace(-600, 600, 48_001)
        with np.errstate(invalid='ignore'):
            np.testing.assert_array_equal(truncate_wrap_to_uint8(grid), grid.astype(np.uint8))


def test_reference_cast_equals_float64_cubic_then_modular_truncation():
    image = sharp_image()
    cubic = cubic64(image, 64, 80)
    assert (cubic <= -1).sum() > 20 and (cubic >= 256).sum() > 20  # wraps both ways
    out = resized(image, (64, 80), image_cast='truncate_wrap')
    assert out.dtype == np.uint8 and out.shape == (64, 80, 3)
    np.testing.assert_array_equal(out, modular_truncation(cubic))
    clean = resized(image, (64, 80), image_cast='round_clip')
    differ = (out != clean).mean()
    assert 0.3 < differ < 0.7, differ  # truncation vs rounding: about every other value
    below, above = cubic <= -1, cubic >= 256
    assert cubic.min() > -66 and cubic.max() < 321  # so wrapped values stay near their end
    assert (out[below] >= 190).all() and (clean[below] == 0).all()  # −1.5 → 255, −20.3 → 236
    assert (out[above] <= 65).all() and (clean[above] == 255).all()  # 256.2 → 0, 270.8 → 14


def test_round_clip_cast_equals_rounded_clipped_float64_cubic():
    image = np.random.default_rng(3).integers(0, 256, (41, 57, 3), dtype=np.uint8)
    expected = np.clip(np.round(cubic64(image, 96, 70)), 0, 255).astype(np.uint8)  # round half to even
    np.testing.assert_array_equal(resized(image, (96, 70)), expected)  # the default
    np.testing.assert_array_equal(resized(image, (96, 70), image_cast='round_clip'), expected)
    # the uint8 cv2 resize (fixed-point weights) is a different, if close, computation
    uint8_resize = cv2.resize(image, (70, 96), interpolation=cv2.INTER_CUBIC)
    assert 0 < (uint8_resize != expected).sum() < 0.01 * expected.size
    with pytest.raises(ValueError, match="image_cast must be one of \\['truncate_wrap', 'round_clip'\\]"):
        FixedResizeMTL(image_cast='reference')


def test_cubic_resize_commutes_with_channel_order():
    # mmcv loads BGR and the data preprocessor flips to RGB after the pipeline; the public
    # code resizes RGB. Cubic resizing acts on each channel alone, so the values agree.
    bgr = sharp_image(5)
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    np.testing.assert_array_equal(cubic64(bgr, 50, 31)[..., ::-1], cubic64(rgb, 50, 31))
    np.testing.assert_array_equal(resized(bgr, (50, 31), image_cast='truncate_wrap')[..., ::-1],
                                  resized(rgb, (50, 31), image_cast='truncate_wrap'))


def test_normals_are_renormalised_in_float64_with_the_float64_eps():
    # a valid 3×3 patch inside an invalid (zero) field: diagonally off its corners the
    # upsampled vectors are tiny (~5e-9), where the eps decides their length
    normals = np.zeros((8, 8, 3), np.float32)
    direction = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    normals[3:6, 3:6] = direction
    results = dict(img=np.zeros((8, 8, 3), np.uint8), gt_normals=normals.copy(), seg_fields=['gt_normals'])
    out = FixedResizeMTL(size=(400, 400))(results)['gt_normals']
    cubic = cv2.resize(normals.astype(np.float64), (400, 400), interpolation=cv2.INTER_CUBIC)
    norm = np.sqrt((cubic ** 2).sum(axis=-1, keepdims=True))
    expected = (cubic / (norm + DOUBLE_EPS)).astype(np.float32)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(renormalize(cubic), cubic / (norm + DOUBLE_EPS), rtol=0, atol=1e-15)
    tiny = (norm[..., 0] > 0) & (norm[..., 0] < 1e-7)
    assert tiny.any() and (out[norm[..., 0] == 0] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(out[tiny], axis=-1), 1.0, atol=1e-6)
    # the former float32 resize with eps 1e-8 shrinks those vectors
    cubic32 = cv2.resize(normals, (400, 400), interpolation=cv2.INTER_CUBIC)
    former = cubic32 / (np.linalg.norm(cubic32, axis=-1, keepdims=True) + 1e-8)
    assert np.abs(former - out).max() > 0.4


@pytest.mark.parametrize('dataset,cls', [('pascal', PascalContextMTLDataset), ('nyud', NYUDMTLDataset)])
def test_a_split_list_is_read_in_sorted_order(tmp_path, dataset, cls):
    tree = generate(dataset, str(tmp_path / dataset), num_train=3, num_val=2, size=(48, 64), seed=1)
    splits = ['val', 'train']
    ds = cls(tree.root, splits, tasks=('semseg',))
    ids = [ds.get_data_info(i)['img_id'] for i in range(len(ds))]
    assert ids == tree.splits['train'] + tree.splits['val']
    assert ds.split_name == 'trainval' and splits == ['val', 'train']  # the caller's list is untouched
    assert [cls(tree.root, s, tasks=('semseg',)).get_data_info(0)['img_id'] for s in ('val', 'train')] == \
        [tree.splits['val'][0], tree.splits['train'][0]]


def build_pipeline(steps):
    init_default_scope('ditask_mm')
    return [TRANSFORMS.build(copy.deepcopy(step)) for step in steps]


def find(pipeline, kind):
    return [t for t in pipeline if type(t).__name__ == kind]


@pytest.mark.parametrize('name', PAPER_CONFIGS + ['ditask/swin-t_pascal-mtl_clean.py',
                                                  'baselines/full-ft_swin-t_pascal-mtl.py'])
def test_configs_select_the_image_cast(name):
    cfg = Config.fromfile(str(REPO / 'configs' / name))
    cast = 'round_clip' if name.endswith('_clean.py') else 'truncate_wrap'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        pipeline = build_pipeline(cfg[loader].dataset.pipeline)
        [resize] = find(pipeline, 'FixedResizeMTL')
        assert resize.image_cast == cast, loader
        [load] = find(pipeline, 'LoadImageFromFile')
        assert load.color_type == 'color_ignore_orientation', loader
        if loader == 'train_dataloader':
            kinds = [type(t).__name__ for t in pipeline]
            assert kinds.index('ImageToFloat64') < kinds.index('RandomFlipMTL') < kinds.index('FixedResizeMTL')
    test_resize = [s for s in cfg.test_pipeline if s['type'] == 'FixedResizeMTL']
    assert [s['image_cast'] for s in test_resize] == [cast]


def test_quick_config_keeps_the_clean_default():
    cfg = Config.fromfile(str(REPO / 'configs/ditask/swin-t_synthetic-mtl_quick.py'))
    for loader in ('train_dataloader', 'val_dataloader'):
        [resize] = find(build_pipeline(cfg[loader].dataset.pipeline), 'FixedResizeMTL')
        assert resize.image_cast == 'round_clip'


@pytest.fixture(scope='module')
def pascal_tree(tmp_path_factory):
    return generate('pascal', str(tmp_path_factory.mktemp('ref') / 'PASCAL_MT'), num_train=2, num_val=2,
                    size=(150, 200), seed=1)


def public_code_image(path: str) -> np.ndarray:
    """The public loader: PIL, RGB, float64 (EXIF orientation ignored)."""
    return np.array(Image.open(path).convert('RGB')).astype(np.float64)


def dataset_from(config: str, loader: str, root: str):
    cfg = Config.fromfile(str(REPO / 'configs' / config))
    init_default_scope('ditask_mm')
    dataset_cfg = copy.deepcopy(cfg[loader].dataset)
    dataset_cfg.data_root = root
    return DATASETS.build(dataset_cfg)


def test_paper_test_pipeline_gives_the_public_codes_image(pascal_tree):
    paper = dataset_from('ditask/swin-t_pascal-mtl.py', 'test_dataloader', pascal_tree.root)
    clean = dataset_from('ditask/swin-t_pascal-mtl_clean.py', 'test_dataloader', pascal_tree.root)
    differ, total = 0, 0
    for index in range(len(paper)):
        item = paper[index]
        got = item['inputs'].numpy().transpose(1, 2, 0)[..., ::-1]  # BGR → RGB, as the preprocessor
        cubic = cubic64(public_code_image(item['data_samples'].img_path), 448, 448)
        np.testing.assert_array_equal(got, modular_truncation(cubic))
        rounded = clean[index]['inputs'].numpy().transpose(1, 2, 0)[..., ::-1]
        np.testing.assert_array_equal(rounded, np.clip(np.round(cubic), 0, 255).astype(np.uint8))
        differ, total = differ + int((got != rounded).sum()), total + got.size
    assert 0.45 < differ / total < 0.55


def test_paper_train_pipeline_casts_once_after_float64_geometry(pascal_tree):
    dataset = dataset_from('ditask/swin-t_pascal-mtl.py', 'train_dataloader', pascal_tree.root)
    random.seed(4)
    for index in range(len(dataset)):
        item = dataset[index]
        meta = item['data_samples']
        image = public_code_image(meta.img_path)
        if meta.flip:
            image = cv2.flip(image, 1)
        height, width = image.shape[:2]
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), meta.rotation, meta.rotation_scale)
        image = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_CUBIC)
        expected = modular_truncation(cubic64(image, 448, 448))
        np.testing.assert_array_equal(item['inputs'].numpy().transpose(1, 2, 0)[..., ::-1], expected)
    as_float = ImageToFloat64()(dict(img=np.full((2, 2, 3), 7, np.uint8)))['img']
    assert as_float.dtype == np.float64 and (as_float == 7).all()


def test_exif_rotated_jpeg_keeps_its_stored_pixels(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = str(tmp_path / 'rotated.jpg')
    image.save(path, quality=95, exif=exif)
    cfg = Config.fromfile(str(REPO / 'configs/ditask/swin-t_pascal-mtl.py'))
    [load] = find(build_pipeline(cfg.test_pipeline), 'LoadImageFromFile')
    loaded = load(dict(img_path=path))['img'][..., ::-1]
    np.testing.assert_array_equal(loaded, public_code_image(path).astype(np.uint8))
