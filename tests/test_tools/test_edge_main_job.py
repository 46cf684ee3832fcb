"""The edge task in the main job's tools: train, test, 2-process test, with odsF in ``metrics.json``.

A tiny DiTASK Swin trains one epoch on a generated PASCAL_MT tree with all
five tasks (edges come from the tree's LabelMap ``.mat`` files, as the real
dataset's), then ``tools/test.py`` scores it with the BSDS edge metric: in one
process, and with ``tools/dist_test.sh`` in two ranks. Both must give the same
``metrics.json``, number for number: the edge counts are integers per image,
the matching is seeded (``ditask_mm/evaluation/metrics/edge_ods.py``) and
both runs forward every image alone, on one thread.
"""
import math
import sys

import pytest
from mmengine.config import Config

from ditask_mm.datasets.synthetic import generate

from .cli_utils import REPO, dist_env, metrics, run, tiny_config, train

FIVE_TASKS = ['semseg', 'human_parts', 'sal', 'normals', 'edge']
#: The metric each task contributes to Δm, and whether lower is better (docs/datasets.md M6).
DELTA_KEYS = {'semseg': ('mIoU', False), 'human_parts': ('mIoU', False), 'sal': ('mIoU', False),
              'normals': ('mean', True), 'edge': ('odsF', False)}
#: Appended to the tiny config: the five PASCAL tasks, edge included.
EXTRA = f"tasks = {FIVE_TASKS!r}\n"
#: Both evaluations forward one image per batch (see the fixture).
ONE_IMAGE_BATCHES = ('test_dataloader.batch_size=1', )


def delta_m(results: dict, baselines: dict, tasks) -> float:
    """Δm in percent over ``tasks`` (docs/datasets.md M6), written out independently of the metric's code."""
    terms = []
    for task in tasks:
        key, lower = DELTA_KEYS[task]
        value, base = results[f'{task}.{key}'], baselines[task]
        terms.append((-1 if lower else 1) * (value - base) / base)
    return 100.0 * sum(terms) / len(terms)


@pytest.fixture(scope='module')
def edge_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('edge_main_job')
    data = root / 'PASCAL_MT'
    generate('pascal', str(data), num_train=4, num_val=3, size=(48, 64), seed=3)
    config = tiny_config(root / 'tiny_edge.py', data, extra=EXTRA)
    train(config, root / 'train', '--cfg-options', 'train_cfg.max_epochs=1')
    checkpoint = root / 'train/epoch_1.pth'
    # both runs forward one image at a time on one thread (torchrun sets OMP_NUM_THREADS=1 in its ranks), so
    # that they score the same floats: a batch of two, or two threads, can round differently in the last bit
    run([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir', root / 'test1', '--cfg-options',
         *ONE_IMAGE_BATCHES], env=dict(OMP_NUM_THREADS='1'))
    # 3 val images on 2 ranks: rank 1 gets a padded duplicate, which the evaluation must drop
    run(['bash', 'tools/dist_test.sh', config, checkpoint, '2', '--work-dir', root / 'test2', '--cfg-options',
         *ONE_IMAGE_BATCHES], env=dist_env())
    return config, metrics(root / 'test1'), metrics(root / 'test2')


def test_the_generated_tree_has_what_the_edge_pipeline_reads(tmp_path):
    from ditask_mm.datasets import PascalContextMTLDataset
    from ditask_mm.datasets.transforms import LoadMultiTaskAnnotations
    from ditask_mm.datasets.transforms.loading import label_map_edges
    tree = generate('pascal', str(tmp_path / 'PASCAL_MT'), num_train=1, num_val=2, size=(24, 32), seed=0)
    dataset = PascalContextMTLDataset(tree.root, split='val', tasks=FIVE_TASKS,
                                      pipeline=[LoadMultiTaskAnnotations()])
    assert len(dataset) == 2
    for index, img_id in enumerate(tree.splits['val']):
        loaded = dataset[index]['gt_edge']  # edges computed from the tree's LabelMap .mat, as for real data
        expected = label_map_edges(tree.targets[img_id]['label_map'])
        assert loaded.shape == expected.shape and (loaded == expected).all()
        assert 0 < loaded.sum() < loaded.size  # some edge pixels, not all


def test_edge_metrics_are_in_metrics_json_and_finite(edge_runs):
    _, single, _ = edge_runs
    for key in ('edge.odsF', 'edge.oisF', 'edge.AP', 'edge.bce_proxy'):
        assert key in single and math.isfinite(single[key]), key
    for key in ('edge.odsF', 'edge.oisF', 'edge.AP'):  # percent
        assert 0.0 <= single[key] <= 100.0, (key, single[key])
    assert single['edge.oisF'] >= single['edge.odsF'] - 1e-9  # each image at its own best threshold


def test_delta_m_includes_edge_against_its_baseline(edge_runs):
    config, single, _ = edge_runs
    baselines = dict(Config.fromfile(str(config)).test_evaluator.baselines)
    assert baselines['edge'] == 72.7  # the dataset base's odsF baseline
    with_edge = delta_m(single, baselines, FIVE_TASKS)
    without_edge = delta_m(single, baselines, FIVE_TASKS[:-1])
    assert single['delta_m'] == pytest.approx(with_edge, rel=1e-9, abs=1e-9)
    assert abs(with_edge - without_edge) > 1e-6  # the edge term moved it: edge is part of Δm


def test_two_ranks_give_the_single_process_metrics_exactly(edge_runs):
    _, single, double = edge_runs
    assert 'edge.odsF' in double and 'delta_m' in double
    assert double == single  # every number, edge included, bit for bit


def test_the_five_task_config_declares_the_edge_protocol():
    cfg = Config.fromfile(str(REPO / 'configs/ditask/swin-t_pascal-mtl_5task.py'))
    assert list(cfg.tasks) == FIVE_TASKS
    assert cfg.val_evaluator.edge_max_dist == 0.0075 and cfg.val_evaluator.edge_num_workers > 0
    nyud = Config.fromfile(str(REPO / 'configs/ditask/swin-t_nyud-mtl_edge.py'))
    assert list(nyud.tasks) == ['semseg', 'depth', 'normals', 'edge']
    assert nyud.val_evaluator.edge_max_dist == 0.011 and nyud.test_evaluator.edge_max_dist == 0.011
