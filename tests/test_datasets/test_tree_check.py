"""ditask_mm.datasets.tree_check and tools/dataset_converters/check_mtl_dataset.py on generated trees."""
import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ditask_mm.datasets import synthetic, tree_check
from ditask_mm.datasets.tree_check import DatasetTreeError, check_dataset_tree, detect_dataset

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
TOOL = os.path.join(REPO, 'tools', 'dataset_converters', 'check_mtl_dataset.py')


@pytest.fixture(scope='module')
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp('trees')
    return {name: str(synthetic.generate(name, base / folder, 4, 3, (24, 32), seed=0, keep_targets=False).root)
            for name, folder in (('pascal', 'PASCAL_MT'), ('nyud', 'NYUD_MT'))}


@pytest.fixture
def pascal(trees, tmp_path):
    return shutil.copytree(trees['pascal'], tmp_path / 'PASCAL_MT')


@pytest.fixture
def nyud(trees, tmp_path):
    return shutil.copytree(trees['nyud'], tmp_path / 'NYUD_MT')


def run_tool(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)


def errors_of(root, **kwargs):
    with pytest.raises(DatasetTreeError) as info:
        check_dataset_tree(root, **kwargs)
    return info.value


@pytest.mark.parametrize('name', ['pascal', 'nyud'])
def test_generated_tree_passes_with_counts_and_decoded_samples(trees, name):
    report = check_dataset_tree(trees[name])
    assert report.ok and report.dataset == name
    cls = tree_check.DATASET_CLASSES[name]
    assert report.tasks == cls.AVAILABLE_TASKS
    assert [s.split for s in report.splits] == ['train', 'val']
    for split, num in zip(report.splits, (4, 3)):
        assert split.num_ids == num
        assert list(split.tasks) == ['image', *cls.AVAILABLE_TASKS]
        for count in split.tasks.values():
            assert (count.found, count.expected, count.num_missing) == (num, num, 0)
            # One decoded sample per kind of source (PASCAL semseg: VOC12 and pascal-context).
            kinds = 2 if (name, count.task) == ('pascal', 'semseg') else 1
            assert len(count.samples) == kinds, count.task
    # A subset of the full archive is a warning, not an error.
    full = tree_check.FULL_ARCHIVE_COUNTS[name]['train']
    assert f'{full - 4} images fewer than the full {tree_check.ARCHIVES[name][0]} archive ({full})' in \
        report.splits[0].count_note
    assert any('fewer than the full' in w for w in report.warnings)
    normals = report.splits[0].tasks['normals'].samples[0]
    if name == 'pascal':
        assert normals.raw.startswith('PNG mode RGB') and 'uint8' in normals.raw and 'LabelMap' in normals.raw
        # VOC12 and pascal-context semseg files are both decoded (two source kinds).
        kinds = {os.path.basename(os.path.dirname(s.path)) for s in report.splits[0].tasks['semseg'].samples}
        assert kinds == {'VOC12', 'pascal-context'}
        assert any('ImageSets/Parts/train.txt covers 4/4 ids' in n for n in report.splits[0].notes)
    else:
        assert normals.raw.startswith('npy') and 'float32' in normals.raw
        assert 'gt_depth' in report.splits[0].tasks['depth'].samples[0].decoded
    assert normals.decoded.startswith('gt_normals (') and ', 3) float32' in normals.decoded


def test_sample_decodes_that_many_files_per_kind(trees):
    report = check_dataset_tree(trees['nyud'], tasks=['depth'], sample=2)
    assert [len(c.samples) for c in report.splits[0].tasks.values()] == [2, 2]
    assert report.splits[0].tasks['depth'].samples[1].path.endswith('000001.npy')


def test_full_archive_count_is_named(trees, monkeypatch):
    monkeypatch.setitem(tree_check.FULL_ARCHIVE_COUNTS, 'pascal', {'train': 4, 'val': 3})
    report = check_dataset_tree(trees['pascal'])
    assert report.splits[0].count_note == 'matches the full PASCAL_MT archive (4 train / 3 val)'
    assert not report.warnings
    report = check_dataset_tree(trees['nyud'], expected_counts={'train': 4, 'val': 5})
    assert report.splits[0].count_note == 'matches the expected count (4)'
    assert report.splits[1].count_note == '2 images fewer than the expected count (5)'


def test_cli_passes_on_a_generated_tree(trees):
    done = run_tool(trees['nyud'], '--tasks', 'semseg', 'depth')
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if ' - mmengine - ' not in line]   # import-time logs
    assert lines[0].startswith(f'NYUD_MT tree at {trees["nyud"]} (NYUDMTLDataset), tasks semseg, depth')
    assert any(line.split() == ['semseg', '4/4'] for line in lines)
    assert any(line.strip().startswith('depth/000000.npy: npy (') for line in lines)
    assert lines[-1] == 'result: usable, 2 warning(s)'


def test_deleted_file_is_named_and_cli_exits_1(pascal):
    missing = os.path.join(pascal, 'sal_distill', '2008_000005.png')   # a val id
    os.remove(missing)
    error = errors_of(pascal)
    assert missing in str(error) and error.paths == [missing]
    assert 'sal, split val: 1 file(s) missing for 1 of 3 ids' in str(error)
    assert 're-extract PASCAL_MT.tgz (https://' in str(error)
    assert error.report.splits[1].tasks['sal'].found == 2
    assert check_dataset_tree(pascal, tasks=['semseg', 'normals']).ok   # sal not asked for
    done = run_tool(pascal)
    assert done.returncode == 1
    assert missing in done.stderr and 'result: NOT usable, 1 error(s)' in done.stdout


def test_missing_directory_and_other_extensions_are_reported(nyud):
    shutil.rmtree(os.path.join(nyud, 'edge'))
    for name in os.listdir(os.path.join(nyud, 'segmentation')):   # an archive with .mat labels
        path = os.path.join(nyud, 'segmentation', name)
        os.rename(path, path[:-4] + '.mat')
    error = errors_of(nyud, max_listed=2)
    message = str(error)
    assert 'edge/: 4 (directory missing)' in message and '... and 2 more' in message
    assert os.path.join(nyud, 'edge', '000001.npy') in error.paths
    assert os.path.join(nyud, 'edge', '000002.npy') not in error.paths   # only the listed ones
    assert "segmentation/: 4 (the folder holds {'.mat': 7} instead)" in message
    assert 'older ASTMT NYUD_MT.tgz' in message


def test_corrupt_image_is_named(nyud):
    broken = os.path.join(nyud, 'images', '000000.jpg')
    with open(broken, 'wb') as f:
        f.write(b'\xff\xd8 not a jpeg')
    error = errors_of(nyud)
    assert f"image {broken!r} cannot be decoded" in str(error) and broken in error.paths
    # The tasks are still sampled, on the next decodable image.
    assert error.report.splits[0].tasks['depth'].samples[0].path.endswith('000001.npy')


@pytest.mark.parametrize('task, write, expected', [
    ('sal', lambda p: Image.new('RGB', (8, 8)).save(p), "PNG mode 'RGB'; expected an 8-bit single-channel"),
    ('semseg', lambda p: Image.fromarray(np.full((8, 8), 30, np.uint8)).save(p), 'values [30] outside 0..20'),
])
def test_malformed_pascal_label_is_named(pascal, task, write, expected):
    folder = {'sal': 'sal_distill', 'semseg': os.path.join('semseg', 'pascal-context')}[task]
    path = os.path.join(pascal, folder, '2008_000000.png')
    write(path)
    error = errors_of(pascal)
    assert path in error.paths and expected in str(error), str(error)


def test_nyud_depth_checks(nyud):
    depth = os.path.join(nyud, 'depth', '000004.npy')   # first val id
    shape = np.load(depth).shape
    np.save(depth, np.full((shape[0] + 2, shape[1]), 1.5, np.float32))
    report = check_dataset_tree(nyud)
    assert report.ok and any(w.startswith(depth) and 'differs from the image' in w for w in report.warnings)
    np.save(depth, -np.ones(shape, np.float32))
    assert 'negative depth -1' in str(errors_of(nyud))


def test_missing_split_file(pascal):
    split_file = os.path.join(pascal, 'ImageSets', 'Context', 'val.txt')
    os.remove(split_file)
    error = errors_of(pascal)
    assert f'split file {split_file!r} not found' in str(error) and "splits present: ['train']" in str(error)
    assert check_dataset_tree(pascal, splits=['train']).ok
    open(split_file, 'w').close()
    assert 'lists no ids' in str(errors_of(pascal))


def test_dataset_detection(trees, tmp_path):
    assert detect_dataset(trees['pascal']) == 'pascal' and detect_dataset(trees['nyud']) == 'nyud'
    error = errors_of(trees['nyud'], dataset='pascal')
    assert 'looks like a NYUD_MT tree, not PASCAL_MT' in str(error)
    parent = os.path.dirname(trees['pascal'])   # holds PASCAL_MT/ and NYUD_MT/: one level too high
    assert f"{os.path.join(parent, 'NYUD_MT')!r} looks like one: pass that directory" in str(errors_of(parent))
    assert 'does not exist' in str(errors_of(tmp_path / 'nowhere'))
    with pytest.raises(KeyError, match="'depth' is not provided by PascalContextMTLDataset"):
        check_dataset_tree(trees['pascal'], tasks=['depth'])


def test_cli_reports_a_wrong_dataset_kind(trees, capsys):
    spec = importlib.util.spec_from_file_location('check_mtl_dataset', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([trees['nyud'], '--dataset', 'pascal']) == 1
    assert 'looks like a NYUD_MT tree' in capsys.readouterr().err
    assert tool.main([trees['nyud'], '--tasks', 'human_parts']) == 1
    assert "'human_parts' is not provided by NYUDMTLDataset" in capsys.readouterr().err
