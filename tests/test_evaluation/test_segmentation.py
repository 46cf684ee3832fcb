"""mIoU of semseg and human parts: hand-computed values and the edge cases of
docs/datasets.md, Metrics M1 and M7."""
import logging
import math

import numpy as np
import pytest

from ditask_mm.evaluation import LabelMapEvaluator, MultiTaskMetric

from . import LogCapture, make_sample, run_metric


def semseg_metric(num_classes, **kwargs):
    return MultiTaskMetric(tasks=['semseg'], num_classes=dict(semseg=num_classes), **kwargs)


def img(values, dtype=np.int64):
    """A (1, 1, W) map from a flat list."""
    return np.asarray(values, dtype=dtype)[None, None]


def brute_force_iou(pairs, num_classes):
    """Metrics M1 of docs/datasets.md literally: TP/FP/FN per class over gt != 255, IoU = TP / max(TP+FP+FN, 1e-8)."""
    tp, fp, fn = [0] * num_classes, [0] * num_classes, [0] * num_classes
    for pred, gt in pairs:
        for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
            if g == 255:
                continue
            for c in range(num_classes):
                tp[c] += g == c and p == c
                fp[c] += g != c and p == c
                fn[c] += g == c and p != c
    return [tp[c] / max(tp[c] + fp[c] + fn[c], 1e-8) for c in range(num_classes)]


def test_absent_class_counts_as_zero_in_reference_and_is_skipped_by_nanmean():
    # C = 4; classes 2 and 3 appear nowhere. IoU0 = 1/2, IoU1 = 2/3.
    sample = make_sample(semseg_pred=img([0, 1, 1, 1]), semseg_gt=img([0, 0, 1, 1]))
    ref = run_metric(semseg_metric(4, per_class=True), [sample])
    nan = run_metric(semseg_metric(4, per_class=True, miou_convention='nanmean'), [sample])
    assert ref['semseg.mIoU'] == pytest.approx(100 * (1 / 2 + 2 / 3) / 4)
    assert nan['semseg.mIoU'] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert ref['semseg.IoU.2'] == 0.0 and math.isnan(nan['semseg.IoU.2'])
    assert ref['semseg.IoU.1'] == pytest.approx(100 * 2 / 3)


def test_class_only_in_prediction_scores_zero_and_counts_in_both_conventions():
    sample = make_sample(semseg_pred=img([0, 0, 0, 2]), semseg_gt=img([0, 0, 0, 0]))
    ref = run_metric(semseg_metric(3, per_class=True), [sample])
    nan = run_metric(semseg_metric(3, miou_convention='nanmean'), [sample])
    assert ref['semseg.IoU.2'] == 0.0
    assert ref['semseg.mIoU'] == pytest.approx(100 * 0.75 / 3)
    assert nan['semseg.mIoU'] == pytest.approx(100 * 0.75 / 2)  # class 2 has a union, class 1 none


def test_all_ignored_image_contributes_nothing():
    rng = np.random.default_rng(0)
    first = make_sample('a.png', semseg_pred=rng.integers(0, 5, (1, 6, 7)), semseg_gt=rng.integers(0, 5, (1, 6, 7)))
    ignored = make_sample('b.png', semseg_pred=rng.integers(0, 5, (1, 4, 4)), semseg_gt=np.full((1, 4, 4), 255))
    metric = semseg_metric(5, per_class=True)
    assert run_metric(metric, [first]) == run_metric(metric, [first, ignored])


def test_prediction_outside_range_is_only_a_false_negative():
    evaluator = LabelMapEvaluator('semseg', 3)
    stats = evaluator.image_stats(img([0, 1, 7, 2, -1]), img([0, 1, 1, 2, 2]))
    np.testing.assert_array_equal(stats['pred_area'], [1, 1, 1])
    np.testing.assert_array_equal(stats['gt_area'], [1, 2, 2])
    np.testing.assert_array_equal(stats['intersect'], [1, 1, 1])
    result = evaluator.reduce([stats])
    assert result['mIoU'] == pytest.approx(100 * (1 + 1 / 2 + 1 / 2) / 3)


def test_float_ground_truth_with_255_against_integer_predictions():
    pred = img([0, 1, 1, 0])
    float_gt = img([0.0, 1.0, 255.0, 2.0], np.float64)
    int_gt = img([0, 1, 255, 2], np.uint8)
    metric = semseg_metric(3, per_class=True)
    result = run_metric(metric, [make_sample(semseg_pred=pred, semseg_gt=float_gt)])
    # valid pixels (g, p): (0,0) (1,1) (2,0): IoU0 = 1/2, IoU1 = 1, IoU2 = 0
    assert result['semseg.mIoU'] == pytest.approx(100 * 1.5 / 3)
    assert result == run_metric(metric, [make_sample(semseg_pred=pred, semseg_gt=int_gt)])


@pytest.mark.parametrize('batch_size', [1, 2, 3])
def test_one_entry_per_image_whatever_the_batch_size(batch_size):
    rng = np.random.default_rng(1)
    samples = [make_sample(f'{i}.png', semseg_pred=rng.integers(0, 4, (1, 5, 6)),
                           semseg_gt=rng.integers(0, 4, (1, 5, 6))) for i in range(3)]
    metric = semseg_metric(4, per_class=True)
    result = run_metric(metric, samples, batch_size=batch_size)
    assert len(metric.results) == 3
    expected = brute_force_iou([(s['pred_sem_seg']['data'].numpy(), s['gt_sem_seg']['data'].numpy())
                                for s in samples], 4)
    assert result['semseg.mIoU'] == pytest.approx(100 * np.mean(expected))


def test_random_maps_match_the_brute_force_definition_and_mmseg_nanmean():
    from mmseg.evaluation.metrics import IoUMetric
    import torch
    rng = np.random.default_rng(2)
    pairs = []
    for _ in range(4):
        gt = rng.integers(0, 7, (1, 9, 8)).astype(np.int64)
        gt[rng.random(gt.shape) < 0.2] = 255
        pairs.append((rng.integers(0, 7, (1, 9, 8)), gt))  # 7 >= C = 6: false negatives
    samples = [make_sample(semseg_pred=p, semseg_gt=g) for p, g in pairs]
    ref = run_metric(semseg_metric(6, per_class=True), samples)
    expected = brute_force_iou(pairs, 6)
    for c in range(6):
        assert ref[f'semseg.IoU.{c}'] == pytest.approx(100 * expected[c])
    nan = run_metric(semseg_metric(6, miou_convention='nanmean'), samples)
    areas = [IoUMetric.intersect_and_union(torch.from_numpy(p[0]), torch.from_numpy(g[0]), 6, 255)
             for p, g in pairs]
    iou = sum(a[0] for a in areas) / sum(a[1] for a in areas)
    assert nan['semseg.mIoU'] == pytest.approx(100 * float(np.nanmean(iou.numpy())))


def test_empty_set_reports_nan_with_a_warning_naming_the_task():
    sample = make_sample(semseg_pred=np.zeros((1, 3, 3), np.int64), semseg_gt=np.full((1, 3, 3), 255))
    with LogCapture() as log:
        result = run_metric(semseg_metric(3), [sample])
    assert math.isnan(result['semseg.mIoU'])
    assert any("'semseg'" in m for m in log.messages(logging.WARNING))


def test_human_parts_default_classes_and_class_names_from_dataset_meta():
    metric = MultiTaskMetric(tasks=['semseg', 'human_parts'], per_class=True)
    metric.dataset_meta = dict(classes=('background', 'aeroplane', 'bicycle'))
    sample = make_sample(semseg_pred=img([0, 1, 2]), semseg_gt=img([0, 1, 1]),
                         human_parts_pred=img([0, 6, 6]), human_parts_gt=img([0, 6, 255]))
    result = run_metric(metric, [sample])
    assert metric.evaluators()['semseg'].num_classes == 3
    assert metric.evaluators()['human_parts'].num_classes == 7
    assert result['semseg.IoU.bicycle'] == 0.0 and result['semseg.IoU.aeroplane'] == 50.0
    assert result['human_parts.mIoU'] == pytest.approx(100 * 2 / 7)
    assert result['human_parts.IoU.6'] == 100.0


def test_unknown_class_count_and_bad_convention_raise():
    metric = MultiTaskMetric(tasks=['semseg'])
    with pytest.raises(ValueError, match='num_classes'):
        metric.process({}, [make_sample(semseg_pred=img([0]), semseg_gt=img([0]))])
    with pytest.raises(ValueError, match='miou_convention'):
        MultiTaskMetric(tasks=['semseg'], miou_convention='mean')
