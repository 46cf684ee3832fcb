"""Saliency: per-image no-beta mIoU/maxF and the pooled β² = 0.3 maxF."""
import math

import numpy as np
import pytest

from ditask_mm.evaluation import IMAGE_THRESHOLDS, POOLED_THRESHOLDS, MultiTaskMetric, SaliencyEvaluator

from . import make_sample, run_metric


def sal(pred, gt, path='img.png', dtype=np.float64):
    return make_sample(path, sal_pred=np.asarray(pred, dtype)[None, None],
                       sal_gt=np.asarray(gt, np.float32)[None, None])


def evaluate(*samples, batch_size=2):
    return run_metric(MultiTaskMetric(tasks=['sal']), list(samples), batch_size=batch_size)


def stats(pred, gt, dtype=np.float64):
    return SaliencyEvaluator().image_stats(np.asarray(pred, dtype)[None], np.asarray(gt, np.float32)[None])


def test_threshold_sets():
    np.testing.assert_allclose(IMAGE_THRESHOLDS, 0.2 + 0.05 * np.arange(15))
    assert len(POOLED_THRESHOLDS) == 19 and POOLED_THRESHOLDS[0] == 0.05


def test_empty_gt_and_empty_prediction_give_one():
    s = stats([0.1, 0.15, 0.0], [0, 0, 0])
    np.testing.assert_array_equal(s['jaccard'], np.ones(15))
    assert evaluate(sal([0.1, 0.15, 0.0], [0, 0, 0]))['sal.mIoU'] == 100.0


def test_empty_gt_with_a_prediction_gives_zero_jaccard_precision_recall():
    s = stats([0.95, 0.3], [0, 0])
    for key in ('jaccard', 'precision', 'recall'):
        assert np.all(np.isfinite(s[key]))
    np.testing.assert_array_equal(s['jaccard'][:2], [0.0, 0.0])  # 0.3 > 0.2, 0.25
    np.testing.assert_array_equal(s['jaccard'][2:], np.zeros(13))  # 0.95 > all
    np.testing.assert_array_equal(s['precision'], np.zeros(15))
    np.testing.assert_array_equal(s['recall'], np.zeros(15))


def test_prediction_exactly_at_a_threshold_is_negative():
    # gt [1, 1, 0, 0]; pred [0.5, 0.25, 0.5, 0.1]
    j = stats([0.5, 0.25, 0.5, 0.1], [1, 1, 0, 0])['jaccard']
    expected = np.where(IMAGE_THRESHOLDS < 0.25 - 1e-9, 2 / 3,
                        np.where(IMAGE_THRESHOLDS < 0.5 - 1e-9, 1 / 3, 0.0))
    np.testing.assert_allclose(j, expected)
    # comparisons in the prediction's dtype: a float32 0.2 is *at* t = 0.2, not above
    j32 = stats([0.2, 0.0], [1, 0], dtype=np.float32)['jaccard']
    assert j32[0] == 0.0


def test_threshold_is_the_argmax_of_the_mean_over_the_set():
    # A: J = 1 for t in [0.38, 0.62), 0.5 below, 0 above
    # B: J = 1 for t in [0.62, 0.72), 0.5 below 0.62, 0 above
    a = sal([0.62, 0.38], [1, 0], 'a.png')
    b = sal([0.72, 0.62], [1, 0], 'b.png')
    result = evaluate(a, b)
    # mean J: 0.5 (t < 0.38), 0.75 (0.4..0.6), 0.5 (0.65, 0.7), 0 (t >= 0.75)
    assert result['sal.mIoU'] == pytest.approx(75.0)  # not the mean of per-image maxima (100)
    assert result['sal.threshold'] == pytest.approx(0.4)


def test_per_image_average_differs_from_pooled_pixels():
    a = sal([0.8], [1], 'a.png')  # J = 1 for t < 0.8
    b = sal([0.1] * 9, [1] * 9, 'b.png')  # nothing predicted: J = 0
    result = evaluate(a, b)
    assert result['sal.mIoU'] == pytest.approx(50.0)  # pooled IoU at t = 0.2 would be 1/10
    # β² = 1 maxF from mean P and R: P = (1 + 0)/2, R = (1 + 0)/2 -> F1 = 0.5
    assert result['sal.maxF'] == pytest.approx(50.0, abs=1e-6)
    # pooled β² = 0.3 at t = 0.05: everything predicted and positive -> F = 1
    assert result['sal.maxF_beta0.3'] == pytest.approx(100.0)


def test_pooled_beta_f_by_hand():
    # gt [1, 1, 0, 0], p [0.92, 0.33, 0.62, 0.12], AP = 2
    result = evaluate(sal([0.92, 0.33, 0.62, 0.12], [1, 1, 0, 0]))

    def f(tp, pp):
        p, r = tp / pp, tp / 2
        return 1.3 * p * r / (0.3 * p + r)
    candidates = [f(2, 4), f(2, 3), f(1, 2), f(1, 1)]  # t < .12, < .33, < .62, < .92
    assert result['sal.maxF_beta0.3'] == pytest.approx(100 * max(candidates))
    assert max(candidates) == pytest.approx(0.8125)


def test_probabilities_are_not_squashed_again():
    # sigmoid(0.97) = 0.725 and sigmoid(0.93) = 0.717 share every threshold: a
    # double sigmoid could not separate them and would give F = 0.565 at best
    result = evaluate(sal([0.97, 0.93], [1, 0]))
    assert result['sal.maxF_beta0.3'] == pytest.approx(100.0)


def test_no_predicted_positive_gives_zero_not_nan():
    result = evaluate(sal([0.01, 0.02, 0.03], [1, 0, 1]))
    assert result['sal.maxF_beta0.3'] == 0.0
    assert result['sal.maxF'] == 0.0 and result['sal.mIoU'] == 0.0


def test_batch_of_one_gives_one_value_per_image():
    rng = np.random.default_rng(0)
    samples = [make_sample(f'{i}.png', sal_pred=rng.random((1, 4, 5)),
                           sal_gt=(rng.random((1, 4, 5)) > 0.5).astype(np.float32)) for i in range(3)]
    by_one = run_metric(metric := MultiTaskMetric(tasks=['sal']), samples, batch_size=1)
    assert len(metric.results) == 3
    assert by_one == evaluate(*samples, batch_size=3)
    # independent per-image loop
    js = []
    for s in samples:
        p, g = s['pred_saliency']['data'].numpy()[0], s['gt_saliency']['data'].numpy()[0] != 0
        js.append([((p > t) & g).sum() / max(((p > t) | g).sum(), 1) if ((p > t) | g).any() else 1.0
                   for t in IMAGE_THRESHOLDS])
    assert by_one['sal.mIoU'] == pytest.approx(100 * np.max(np.mean(js, axis=0)))


def test_padding_255_is_ignored():
    pred = np.array([[0.7, 0.3, 0.9, 0.1]])
    gt = np.array([[1, 0, 255, 255]], np.float32)
    padded = make_sample(sal_pred=pred[None], sal_gt=gt[None])
    cropped = sal([0.7, 0.3], [1, 0])
    assert evaluate(padded) == evaluate(cropped)


def test_empty_set_reports_nan():
    result = evaluate(make_sample(sal_pred=np.full((1, 2, 2), 0.5), sal_gt=np.full((1, 2, 2), 255.0)))
    assert all(math.isnan(v) for v in result.values())


def test_counts_above_matches_brute_force_with_ties_and_nan():
    from ditask_mm.evaluation.metrics.saliency import counts_above
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        scores = rng.choice(np.r_[IMAGE_THRESHOLDS, POOLED_THRESHOLDS, rng.random(20), np.nan], (30, 40))
        scores = scores.astype(dtype)
        positive, valid = rng.random((30, 40)) > 0.5, rng.random((30, 40)) > 0.2
        for (pp, tp), thresholds in zip(counts_above(scores, positive, valid, (IMAGE_THRESHOLDS, POOLED_THRESHOLDS)),
                                        (IMAGE_THRESHOLDS, POOLED_THRESHOLDS)):
            above = [scores > dtype(t) for t in thresholds]
            np.testing.assert_array_equal(pp, [(a & valid).sum() for a in above])
            np.testing.assert_array_equal(tp, [(a & valid & positive).sum() for a in above])
