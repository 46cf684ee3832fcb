"""Offline edge scoring: ``tools/test.py --edge-png-dir`` then ``tools/analysis_tools/eval_edges.py``.

A randomly initialised tiny DiTASK Swin (``cli_utils.TINY``) with a semseg
and an edge head is tested on a generated PASCAL_MT tree at a non-square
fixed size (32×64, so that a transposed or mis-sized PNG shows); the folder
of edge PNGs the run writes must score, offline, exactly the odsF, oisF and
AP of the run's ``metrics.json``. The edge head's last layer is scaled up so
that the probabilities spread over many PNG values instead of sitting at
0.5, which makes the comparison depend on every pixel.
"""
import json
import logging
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ditask_mm.datasets.synthetic import generate

from ..test_evaluation import LogCapture
from .cli_utils import REPO, evaluate, metrics, run, tiny_config


EVAL_EDGES = REPO / 'tools/analysis_tools/eval_edges.py'
EVAL_SIZE = (32, 64)  # multiples of the data preprocessor's size_divisor (32)
#: The tiny config with edges, evaluated at EVAL_SIZE as the paper configs are at 448x448.
EDGE_RUN = """
tasks = ['semseg', 'edge']
eval_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadMultiTaskAnnotations'),
    dict(type='FixedResizeMTL', size={size}, eval_at_resized=True), dict(type='AddIgnoreRegions'),
    dict(type='PackMultiTaskInputs')]
test_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root, pipeline=eval_pipeline))
"""
#: Factor on the edge head's last layer: logits of a few units instead of a few hundredths.
LOGIT_SCALE = 300.0
METRIC_KEYS = ('edge.odsF', 'edge.oisF', 'edge.AP')
EDGE_CLASSIFIER = 'decode_heads.edge.classifier.weight'
#: Seed of the random initialisation: the same model, hence the same numbers, on every run.
MODEL_SEED = 0


def random_checkpoint(config, path):
    """A checkpoint of the config's randomly initialised model, with spread-out edge probabilities."""
    from ditask_mm.apis import init_model
    torch.manual_seed(MODEL_SEED)
    state = init_model(str(config), init_weights=False).state_dict()
    state[EDGE_CLASSIFIER] = state[EDGE_CLASSIFIER] * LOGIT_SCALE
    torch.save(dict(state_dict=state, meta=dict()), path)
    return path


def eval_edges(*args, check=True):
    return run([sys.executable, EVAL_EDGES, *args], check=check)


@pytest.fixture(scope='module')
def edge_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('edges')
    data = root / 'PASCAL_MT'
    generate('pascal', str(data), num_train=1, num_val=4, size=(40, 52), seed=5)
    config = tiny_config(root / 'edge_run.py', data, extra=EDGE_RUN.format(size=EVAL_SIZE))
    checkpoint = random_checkpoint(config, root / 'random.pth')
    pngs = root / 'edge_pngs'
    evaluate(config, checkpoint, root / 'test', '--edge-png-dir', pngs)
    return root, data, pngs


def test_png_folder_scores_exactly_as_the_run(edge_run):
    root, data, pngs = edge_run
    val_ids = (data / 'ImageSets/Context/val.txt').read_text().split()
    assert sorted(p.stem for p in pngs.glob('*.png')) == sorted(val_ids)
    values = []
    for path in sorted(pngs.glob('*.png')):
        with Image.open(path) as image:
            assert image.mode == 'L' and image.size == EVAL_SIZE[::-1], (path, image.mode, image.size)
            values.append(np.array(image))
    assert len(np.unique(np.concatenate([v.ravel() for v in values]))) > 20, 'degenerate predictions'
    online = metrics(root / 'test')
    out = root / 'offline.json'
    proc = eval_edges(pngs, data, '--dataset', 'pascal', '--gt-size', *EVAL_SIZE, '--out', out)
    offline = json.loads(out.read_text())
    assert set(offline) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert 0 < online[key] < 100
        assert offline[key] == pytest.approx(online[key], abs=1e-9), key
        assert f'{key} {online[key]:.4f}' in proc.stdout


def test_png_of_the_wrong_size_is_named_with_the_fix(edge_run):
    root, data, pngs = edge_run
    proc = eval_edges(pngs, data, '--dataset', 'pascal', check=False)  # ground truth at its original size
    assert proc.returncode == 1
    assert f'{pngs}/' in proc.stderr and 'differ in size' in proc.stderr, proc.stderr[-2000:]
    assert f'--gt-size {EVAL_SIZE[0]} {EVAL_SIZE[1]}' in proc.stderr


def test_missing_pngs_are_listed_by_id(edge_run, tmp_path):
    from ditask_mm.evaluation.edge_folder import EdgeFolderError, score_edge_folder
    _, data, pngs = edge_run
    folder = tmp_path / 'partial'
    folder.mkdir()
    val_ids = (data / 'ImageSets/Context/val.txt').read_text().split()
    kept = val_ids[0]
    (folder / f'{kept}.png').write_bytes((pngs / f'{kept}.png').read_bytes())
    with pytest.raises(EdgeFolderError) as error:
        score_edge_folder(str(folder), str(data), 'pascal', gt_size=EVAL_SIZE, progress=False)
    message = str(error.value)
    assert f'no PNG for {len(val_ids) - 1} of the {len(val_ids)} images' in message
    assert all(img_id in message for img_id in val_ids[1:]) and kept not in message


def test_non_8bit_png_is_named(edge_run, tmp_path):
    from ditask_mm.evaluation.edge_folder import EdgeFolderError, score_edge_folder
    _, data, pngs = edge_run
    folder = tmp_path / 'sixteen_bit'
    folder.mkdir()
    val_ids = (data / 'ImageSets/Context/val.txt').read_text().split()
    for img_id in val_ids:
        (folder / f'{img_id}.png').write_bytes((pngs / f'{img_id}.png').read_bytes())
    bad = folder / f'{val_ids[1]}.png'
    Image.fromarray(np.zeros(EVAL_SIZE, np.uint16) + 300).save(bad)
    with pytest.raises(EdgeFolderError, match='not 8-bit') as error:
        score_edge_folder(str(folder), str(data), 'pascal', gt_size=EVAL_SIZE, progress=False)
    assert str(bad) in str(error.value) and str(folder / f'{val_ids[0]}.png') not in str(error.value)


def test_pngs_outside_the_split_only_warn(edge_run, tmp_path):
    from ditask_mm.evaluation.edge_folder import score_edge_folder
    root, data, pngs = edge_run
    folder = tmp_path / 'superset'
    folder.mkdir()
    for path in pngs.glob('*.png'):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / 'not_in_split.png').write_bytes(next(pngs.glob('*.png')).read_bytes())
    with LogCapture() as logs:
        scored = score_edge_folder(str(folder), str(data), 'pascal', gt_size=EVAL_SIZE, progress=False)
    online = metrics(root / 'test')
    assert all(scored[key] == pytest.approx(online[key], abs=1e-9) for key in METRIC_KEYS)
    warnings = logs.messages(logging.WARNING)
    assert len(warnings) == 1 and '1 PNG(s) of images outside the split' in warnings[0]
    assert 'not_in_split.png' in warnings[0]
