"""MultiTaskMetric: the result keys, Δm, input checks and distributed collection."""
import logging
import math
import pickle

import numpy as np
import pytest

from ditask_mm.evaluation import MultiTaskMetric, delta_m
from ditask_mm.registry import METRICS

from . import LogCapture, make_sample, run_metric

ALL_TASKS = ['semseg', 'human_parts', 'sal', 'edge', 'normals', 'depth']
#: The PASCAL single-task Swin-T baselines (configs/_base_/datasets/pascal_mtl.py holds the config copy).
PASCAL_BASELINES = dict(semseg=67.21, human_parts=61.93, sal=62.35, normals=17.97)
WORKED_EXAMPLE = {'semseg.mIoU': 68.00, 'human_parts.mIoU': 60.00, 'sal.mIoU': 64.00, 'normals.mean': 17.00}


def full_sample(rng, path, height=6, width=7, as_dict=True):
    """Random predictions and ground truth of all six tasks for one image."""
    shape = (1, height, width)
    normals_pred = rng.normal(size=(3, height, width))
    normals_pred /= np.linalg.norm(normals_pred, axis=0, keepdims=True)
    normals_gt = rng.normal(size=(3, height, width))
    normals_gt /= np.linalg.norm(normals_gt, axis=0, keepdims=True)
    normals_gt[:, 0, :2] = 255.0
    semseg_gt = rng.integers(0, 5, shape)
    semseg_gt[0, -1] = 255
    return make_sample(
        path, as_dict=as_dict,
        semseg_pred=rng.integers(0, 5, shape), semseg_gt=semseg_gt,
        human_parts_pred=rng.integers(0, 7, shape), human_parts_gt=rng.integers(0, 7, shape),
        sal_pred=rng.random(shape), sal_gt=(rng.random(shape) > 0.5).astype(np.float32),
        edge_pred=rng.random(shape), edge_gt=(rng.random(shape) > 0.8).astype(np.float32),
        normals_pred=normals_pred, normals_gt=normals_gt,
        depth_pred=rng.uniform(0.5, 5, shape), depth_gt=rng.choice([0.0, 1.0, 2.5, 4.0], shape))


def full_metric(**kwargs):
    return MultiTaskMetric(tasks=ALL_TASKS, num_classes=dict(semseg=5), **kwargs)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], nan_ok=True), key


# ------------------------------------------------------------------- keys and inputs

def test_result_keys_dicts_and_data_samples_agree():
    dicts = [full_sample(np.random.default_rng(i), f'{i}.png') for i in range(3)]
    objects = [full_sample(np.random.default_rng(i), f'{i}.png', as_dict=False) for i in range(3)]
    result = run_metric(full_metric(baselines=dict(semseg=50.0, depth=2.0)), dicts)
    assert set(result) == {
        'semseg.mIoU', 'human_parts.mIoU', 'sal.mIoU', 'sal.maxF', 'sal.maxF_beta0.3', 'sal.threshold',
        'edge.bce_proxy', 'edge.odsF', 'edge.oisF', 'edge.AP', 'normals.mean', 'normals.median', 'normals.rmse',
        'normals.11.25', 'normals.22.5', 'normals.30', 'depth.rmse', 'depth.log_rmse', 'delta_m'}
    assert all(np.isfinite(v) for v in result.values())
    assert_same(result, run_metric(full_metric(baselines=dict(semseg=50.0, depth=2.0)), objects))


def test_entries_hold_small_statistics_independent_of_image_size():
    metric = full_metric()
    metric.process({}, [full_sample(np.random.default_rng(0), 's.png', 4, 4),
                        full_sample(np.random.default_rng(1), 'l.png', 64, 80)])
    small, large = (len(pickle.dumps(entry)) for entry in metric.results)
    assert len(metric.results) == 2 and abs(small - large) < 64


def test_registered_and_unknown_task_lists_the_known_ones():
    metric = METRICS.build(dict(type='MultiTaskMetric', tasks=['sal']))
    assert isinstance(metric, MultiTaskMetric)
    with pytest.raises(KeyError, match='known tasks.*semseg'):
        MultiTaskMetric(tasks=['semseg', 'segm'])


def test_shape_mismatch_raises_naming_the_file_and_both_shapes():
    sample = make_sample('dir/2008_000123.jpg', sal_pred=np.zeros((1, 4, 5)), sal_gt=np.zeros((1, 4, 6)))
    with pytest.raises(ValueError) as info:
        MultiTaskMetric(tasks=['sal']).process({}, [sample])
    assert '2008_000123.jpg' in str(info.value) and '(1, 4, 5)' in str(info.value) and '(1, 4, 6)' in str(info.value)


def test_missing_prediction_raises_naming_the_file():
    sample = make_sample('x.png', sal_gt=np.zeros((1, 2, 2)))
    with pytest.raises(KeyError, match=r"pred_saliency.*x\.png"):
        MultiTaskMetric(tasks=['sal']).process({}, [sample])


# ------------------------------------------------------------------- Δm

def test_delta_m_worked_example():
    metric = MultiTaskMetric(tasks=['semseg', 'human_parts', 'sal', 'normals'], baselines=PASCAL_BASELINES)
    assert metric.compute_delta_m(WORKED_EXAMPLE) == pytest.approx(1.5258, abs=1e-4)
    terms = [(68 - 67.21) / 67.21, (60 - 61.93) / 61.93, (64 - 62.35) / 62.35, -(17 - 17.97) / 17.97]
    assert metric.compute_delta_m(WORKED_EXAMPLE) == pytest.approx(100 * sum(terms) / 4, abs=1e-12)
    # the 'pascal' shortcut is gone: the numbers live in the dataset config, and the error says where
    with pytest.raises(ValueError, match='pascal_mtl.py'):
        MultiTaskMetric(tasks=list(PASCAL_BASELINES), baselines='pascal')


@pytest.mark.parametrize('units', ['auto', 'fraction'])
def test_delta_m_iou_baselines_as_fractions(units):
    fractions = dict(semseg=0.6721, human_parts=0.6193, sal=0.6235, normals=17.97)  # normals stays in degrees
    metric = MultiTaskMetric(tasks=list(fractions), baselines=fractions, baseline_units=units)
    assert metric.compute_delta_m(WORKED_EXAMPLE) == pytest.approx(1.5258, abs=1e-4)


def test_delta_m_percent_units_do_not_rescale():
    fractions = dict(semseg=0.6721)
    metric = MultiTaskMetric(tasks=['semseg'], baselines=fractions, baseline_units='percent')
    assert metric.compute_delta_m({'semseg.mIoU': 68.0}) == pytest.approx(100 * (68 - 0.6721) / 0.6721)
    with pytest.raises(ValueError, match='baseline_units'):
        MultiTaskMetric(tasks=['semseg'], baseline_units='percentage')


def test_delta_m_sign_of_lower_is_better_metrics():
    metric = MultiTaskMetric(tasks=['normals', 'depth', 'semseg'], baselines=dict(normals=20.0, depth=0.5))
    values = {'normals.mean': 18.0, 'depth.rmse': 0.6, 'semseg.mIoU': 1.0}
    # normals better by 10 %, depth worse by 20 %
    assert metric.compute_delta_m(values) == pytest.approx(100 * (0.1 - 0.2) / 2)
    assert delta_m({'a': 18.0}, {'a': 20.0}) == pytest.approx(-10.0)
    assert delta_m({'a': 18.0}, {'a': 20.0}, lower_is_better={'a'}) == pytest.approx(10.0)


def test_delta_m_with_another_metric_and_override():
    metric = MultiTaskMetric(tasks=['normals', 'sal'], baselines=dict(
        normals=dict(metric='11.25', value=0.40), sal=dict(metric='maxF', value=80.0, lower_is_better=True)))
    values = {'normals.11.25': 44.0, 'sal.maxF': 88.0, 'normals.mean': 1.0, 'sal.mIoU': 1.0}
    assert metric.compute_delta_m(values) == pytest.approx(100 * (0.1 - 0.1) / 2, abs=1e-12)
    bad = MultiTaskMetric(tasks=['normals'], baselines=dict(normals=dict(metric='mErr', value=20.0)))
    with pytest.raises(KeyError, match='normals.mErr'):
        bad.compute_delta_m({'normals.mean': 18.0})


def test_baselines_of_other_tasks_are_ignored_unknown_ones_raise_and_tasks_without_are_left_out():
    # a dataset config holds the baselines of all its tasks; a run of some of them uses theirs only
    subset = MultiTaskMetric(tasks=['semseg', 'normals'], baselines=PASCAL_BASELINES)
    assert set(subset.baselines) == {'semseg', 'normals'}
    expected = 100 * ((68 - 67.21) / 67.21 - (17 - 17.97) / 17.97) / 2
    assert subset.compute_delta_m(WORKED_EXAMPLE) == pytest.approx(expected, abs=1e-12)
    only_other = MultiTaskMetric(tasks=['edge'], baselines=dict(semseg=67.21, depth=0.6))
    assert only_other.baselines == {}  # nothing of this run's tasks: no delta_m, as with baselines=None
    with pytest.raises(KeyError, match=r"unknown task\(s\) \['segmentation'\]"):
        MultiTaskMetric(tasks=['semseg', 'normals'], baselines=dict(semseg=67.21, segmentation=0.6))
    metric = MultiTaskMetric(tasks=['semseg', 'normals'], baselines=dict(semseg=50.0))
    with LogCapture() as log:
        value = metric.compute_delta_m({'semseg.mIoU': 55.0, 'normals.mean': 99.0})
    assert value == pytest.approx(10.0)
    assert any('normals' in m and 'delta_m' in m for m in log.messages())


def test_delta_m_is_computed_by_compute_metrics():
    sample = make_sample(semseg_pred=np.array([[[0, 1, 1, 1]]]), semseg_gt=np.array([[[0, 0, 1, 1]]]))
    metric = MultiTaskMetric(tasks=['semseg'], num_classes=dict(semseg=2), baselines=dict(semseg=0.5))
    result = run_metric(metric, [sample])
    miou = 100 * (1 / 2 + 2 / 3) / 2
    assert result['delta_m'] == pytest.approx(100 * (miou - 50) / 50)
    assert math.isnan(run_metric(MultiTaskMetric(tasks=['depth'], baselines=dict(depth=1.0)), [make_sample(
        depth_pred=np.ones((1, 1, 1)), depth_gt=np.zeros((1, 1, 1)))])['delta_m'])


# ------------------------------------------------------------------- distributed

def test_two_rank_split_with_padding_gives_the_single_rank_numbers(monkeypatch, tmp_path):
    """5 images on 2 ranks: DefaultSampler pads rank 1 with image 0; mmengine's
    collect_results_cpu interleaves the parts and truncates to the dataset
    size, which drops the duplicate only if every entry is one image."""
    import mmengine.dataset.sampler as sampler_module
    import mmengine.dist.dist as dist_module
    from mmengine.dataset import DefaultSampler

    samples = [full_sample(np.random.default_rng(10 + i), f'{i}.png', 5 + i, 6) for i in range(5)]
    single = run_metric(full_metric(), samples, batch_size=2)

    parts = {}
    for rank in (1, 0):  # rank 0 last: it reads every part
        monkeypatch.setattr(sampler_module, 'get_dist_info', lambda r=rank: (r, 2))
        indices = list(DefaultSampler(samples, shuffle=False))
        metric = full_metric()
        for start in range(0, len(indices), 2):
            metric.process({}, [samples[i] for i in indices[start:start + 2]])
        assert len(metric.results) == 3
        parts[rank] = (indices, list(metric.results))
        monkeypatch.setattr(dist_module, 'get_dist_info', lambda r=rank: (r, 2))
        gathered = dist_module.collect_results_cpu(metric.results, 5, tmpdir=str(tmp_path / 'collect'))
    assert parts[1][0] == [1, 3, 0]  # the padded duplicate of image 0
    assert len(gathered) == 5
    assert_same(full_metric().compute_metrics(gathered), single)

    # the duplicate does change the numbers: keeping it must not pass
    untruncated = parts[0][1] + parts[1][1]
    with_duplicate = full_metric().compute_metrics(untruncated)
    assert with_duplicate['semseg.mIoU'] != pytest.approx(single['semseg.mIoU'])


def test_empty_edge_set_gives_nan_and_a_warning():
    metric = MultiTaskMetric(tasks=['edge'])
    with LogCapture() as log:
        result = run_metric(metric, [make_sample(edge_pred=np.ones((1, 2, 2)), edge_gt=np.full((1, 2, 2), 255.0))])
    assert math.isnan(result['edge.bce_proxy'])
    assert any("'edge'" in m for m in log.messages(logging.WARNING))


def test_through_mmengine_evaluator_with_size_truncation():
    from mmengine.evaluator import Evaluator
    samples = [full_sample(np.random.default_rng(20 + i), f'{i}.png', as_dict=False) for i in range(3)]
    evaluator = Evaluator(full_metric())
    evaluator.dataset_meta = dict(classes=[f'c{i}' for i in range(5)])
    evaluator.process(data_samples=samples[:2], data_batch={})
    evaluator.process(data_samples=[samples[2], samples[0]], data_batch={})  # padded duplicate
    result = evaluator.evaluate(3)
    expected = run_metric(full_metric(), [s.to_dict() for s in samples])
    assert_same(result, expected)


def test_targets_padded_by_the_preprocessor_are_cropped_to_an_image_scored_at_its_own_size():
    """A 48×64 image in a batch padded to 64×64: its prediction is 48×64, its target 64×64 with pad values."""
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 21, (1, 48, 64))
    gt = rng.integers(0, 21, (1, 48, 64))
    padded = np.full((1, 64, 64), 255)
    padded[:, :48] = gt
    normals_pred = rng.normal(size=(3, 48, 64))
    normals_gt = rng.normal(size=(3, 48, 64))
    normals_padded = np.zeros((3, 64, 64))
    normals_padded[:, :48] = normals_gt
    metric = MultiTaskMetric(tasks=['semseg', 'normals'], num_classes=dict(semseg=21))
    sample = make_sample(semseg_pred=pred, semseg_gt=padded, normals_pred=normals_pred, normals_gt=normals_padded)
    sample.update(img_shape=(48, 64), pad_shape=(64, 64), ori_shape=(48, 64))
    cropped = make_sample(semseg_pred=pred, semseg_gt=gt, normals_pred=normals_pred, normals_gt=normals_gt)
    assert run_metric(metric, [sample]) == run_metric(metric, [cropped])
    # a prediction resized to another ori_shape is not the unpadded image: still refused, with the shapes
    sample.update(img_shape=(40, 64))
    with pytest.raises(ValueError, match=r'prediction shape \(1, 48, 64\) does not match the ground truth'):
        run_metric(metric, [sample])
