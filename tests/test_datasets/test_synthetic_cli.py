"""tools/dataset_converters/make_synthetic_mtl.py: refuses a non-empty output, progress and summary."""
import importlib.util
import os

import pytest

from ditask_mm.datasets import PascalContextMTLDataset


def pascal_dataset(*args, **kwargs):
    """The dataset without mmengine's serialisation (its gc.collect costs ~0.2 s per build)."""
    return PascalContextMTLDataset(*args, serialize_data=False, **kwargs)


TOOL = os.path.join(os.path.dirname(__file__), '..', '..', 'tools', 'dataset_converters', 'make_synthetic_mtl.py')


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('make_synthetic_mtl', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(tool, out, *extra):
    return tool.main(['--dataset', 'pascal', '--out', str(out), '--num-train', '6', '--num-val', '4',
                      '--size', '24', '32', *extra])


def test_writes_a_loadable_tree_with_progress_and_summary(tool, tmp_path, capsys):
    out = tmp_path / 'PASCAL_MT'
    assert run(tool, out) == 0
    lines = capsys.readouterr().out.splitlines()
    progress = [line for line in lines if line.startswith('[')]
    assert [p.split('%')[0].strip('[ ') for p in progress] == [str(p) for p in range(10, 101, 10)]
    assert 'train 6, val 4' in lines[len(progress)] and 'portrait' in lines[len(progress)]
    assert len(pascal_dataset(str(out), 'val', tasks=('semseg', 'human_parts'))) == 4
    assert [n for n in os.listdir(tmp_path) if n != 'PASCAL_MT'] == []   # no temporary left behind


def test_refuses_a_non_empty_output_unless_overwrite(tool, tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('user data')
    assert run(tool, out) == 2
    assert 'not empty' in capsys.readouterr().err
    assert os.listdir(out) == ['keep.txt']
    assert sorted(os.listdir(tmp_path)) == ['out']
    assert run(tool, out, '--overwrite') == 0
    assert 'keep.txt' not in os.listdir(out) and 'JPEGImages' in os.listdir(out)
    assert sorted(os.listdir(tmp_path)) == ['out']


def test_accepts_an_existing_empty_directory(tool, tmp_path):
    out = tmp_path / 'empty'
    out.mkdir()
    assert tool.main(['--dataset', 'nyud', '--out', str(out), '--num-train', '2', '--num-val', '1',
                      '--size', '16', '20']) == 0
    assert sorted(os.listdir(out)) == ['depth', 'edge', 'gt_sets', 'images', 'normals', 'segmentation']


def test_rejects_bad_arguments(tool, tmp_path):
    with pytest.raises(SystemExit):
        tool.main(['--dataset', 'coco', '--out', str(tmp_path / 'x')])
    with pytest.raises(SystemExit):
        tool.main(['--dataset', 'nyud', '--out', str(tmp_path / 'x'), '--num-train', '0', '--num-val', '0'])
