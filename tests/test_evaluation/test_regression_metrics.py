"""Normals (angular error), depth (RMSE) and the edge BCE proxy."""
import logging
import math

import numpy as np
import pytest

from ditask_mm.evaluation import MultiTaskMetric
from ditask_mm.evaluation.metrics.normals import histogram_median

from . import LogCapture, make_sample, run_metric


def tilted(angles_deg):
    """(3, 1, N) unit vectors at ``angles_deg`` from +z, and the +z ground truth."""
    a = np.radians(np.asarray(angles_deg, np.float64))
    pred = np.stack([np.sin(a), np.zeros_like(a), np.cos(a)])[:, None]
    gt = np.zeros_like(pred)
    gt[2] = 1.0
    return pred, gt


def normals(*samples):
    return run_metric(MultiTaskMetric(tasks=['normals']), list(samples))


def depth(*samples):
    return run_metric(MultiTaskMetric(tasks=['depth']), list(samples))


# ------------------------------------------------------------------- normals

def test_mean_is_the_tables_rmse_and_rmse_is_the_true_rmse():
    pred, gt = tilted([0.0, 0.0, 90.0])
    result = normals(make_sample(normals_pred=pred, normals_gt=gt))
    assert result['normals.mean'] == pytest.approx(30.0)
    assert result['normals.rmse'] == pytest.approx(math.sqrt(90.0 ** 2 / 3))
    assert result['normals.11.25'] == pytest.approx(200 / 3)
    assert result['normals.22.5'] == pytest.approx(200 / 3) and result['normals.30'] == pytest.approx(200 / 3)


def test_zero_prediction_is_90_degrees_and_antiparallel_is_180():
    gt = np.zeros((3, 1, 2))
    gt[2] = 1.0
    pred = np.zeros((3, 1, 2))
    pred[2, 0, 1] = -1.0  # pixel 0: zero vector, pixel 1: antiparallel
    result = normals(make_sample(normals_pred=pred, normals_gt=gt))
    assert result['normals.mean'] == pytest.approx(135.0)
    assert result['normals.rmse'] == pytest.approx(math.sqrt((90.0 ** 2 + 180.0 ** 2) / 2))
    assert result['normals.median'] == pytest.approx(135.0, abs=0.05)
    assert result['normals.30'] == 0.0


def test_ignored_ground_truth_255_and_zero_vectors():
    pred, gt = tilted([10.0, 50.0, 170.0, 20.0])
    gt[:, 0, 2] = 255.0  # invalid (all channels)
    gt[:, 0, 3] = 0.0  # zero vector: no direction
    result = normals(make_sample(normals_pred=pred, normals_gt=gt))
    assert result['normals.mean'] == pytest.approx(30.0)
    assert result['normals.11.25'] == pytest.approx(50.0)


def test_pooled_over_pixels_not_averaged_per_image():
    pa, ga = tilted([0.0])
    pb, gb = tilted([90.0, 90.0, 90.0])
    result = normals(make_sample('a.png', normals_pred=pa, normals_gt=ga),
                     make_sample('b.png', normals_pred=pb, normals_gt=gb))
    assert result['normals.mean'] == pytest.approx(67.5)  # per-image mean would be 45


def test_random_angles_statistics_and_histogram_median():
    rng = np.random.default_rng(0)
    samples, all_angles = [], []
    for i, n in enumerate((501, 300)):
        angles = rng.uniform(0, 180, n) ** 1.0
        pred, gt = tilted(angles)
        samples.append(make_sample(f'{i}.png', normals_pred=pred, normals_gt=gt))
        all_angles.append(angles)
    d = np.concatenate(all_angles)
    result = normals(*samples)
    assert result['normals.mean'] == pytest.approx(d.mean(), abs=1e-6)
    assert result['normals.rmse'] == pytest.approx(np.sqrt(np.mean(d ** 2)), abs=1e-6)
    assert abs(result['normals.median'] - np.median(d)) <= 0.05
    assert result['normals.22.5'] == pytest.approx(100 * np.mean(d < 22.5))


def test_histogram_median_even_count_with_far_apart_middle_values():
    hist = np.zeros(3600, np.int32)
    hist[0] += 1  # ~0.025°
    hist[2000] += 1  # ~100.025°
    assert histogram_median(hist) == pytest.approx(50.025)
    assert math.isnan(histogram_median(np.zeros(3600, np.int32)))


def test_nan_prediction_propagates_to_the_mean():
    pred, gt = tilted([0.0, 10.0])
    pred[:, 0, 1] = np.nan
    result = normals(make_sample(normals_pred=pred, normals_gt=gt))
    assert math.isnan(result['normals.mean'])


def test_all_invalid_normals_give_nan_and_a_warning():
    pred, gt = tilted([5.0])
    gt[:] = 255.0
    with LogCapture() as log:
        result = normals(make_sample(normals_pred=pred, normals_gt=gt))
    assert all(math.isnan(v) for v in result.values())
    assert any("'normals'" in m for m in log.messages(logging.WARNING))


def test_normals_need_three_channels():
    with pytest.raises(ValueError, match=r'\(3, H, W\)'):
        normals(make_sample(normals_pred=np.zeros((1, 2, 2)), normals_gt=np.zeros((1, 2, 2))))


# ------------------------------------------------------------------- depth

def test_depth_rmse_is_pooled_not_a_mean_of_per_image_rmses():
    a = make_sample('a.png', depth_pred=np.array([[[3.0]]]), depth_gt=np.array([[[1.0]]]))
    b = make_sample('b.png', depth_pred=np.array([[[2.0, 2.0, 2.0]]]), depth_gt=np.array([[[1.0, 1.0, 1.0]]]))
    result = depth(a, b)
    assert result['depth.rmse'] == pytest.approx(math.sqrt((4 + 3) / 4))  # per-image mean: 1.5
    log_sq = np.log(3.0) ** 2 + 3 * np.log(2.0) ** 2
    assert result['depth.log_rmse'] == pytest.approx(math.sqrt(log_sq / 4))


def test_nonpositive_predictions_are_clamped_so_log_rmse_is_finite():
    result = depth(make_sample(depth_pred=np.array([[[0.0, -1.0]]]), depth_gt=np.array([[[1.0, 1.0]]])))
    assert result['depth.log_rmse'] == pytest.approx(-math.log(1e-9))
    assert result['depth.rmse'] == pytest.approx(1.0 - 1e-9)


def test_depth_zero_and_255_are_ignored():
    gt = np.array([[[2.0, 0.0, 255.0]]])
    pred = np.array([[[1.5, 7.0, -3.0]]])
    result = depth(make_sample(depth_pred=pred, depth_gt=gt))
    assert result['depth.rmse'] == pytest.approx(0.5)
    assert result['depth.log_rmse'] == pytest.approx(abs(math.log(2.0 / 1.5)))


def test_all_invalid_depth_gives_nan():
    result = depth(make_sample(depth_pred=np.ones((1, 2, 2)), depth_gt=np.zeros((1, 2, 2))))
    assert math.isnan(result['depth.rmse']) and math.isnan(result['depth.log_rmse'])


# ------------------------------------------------------------------- edge

def test_edge_bce_proxy_by_hand():
    def softplus(x):
        return math.log1p(math.exp(x))
    pred = np.array([[[0.8, 0.3, 0.6]]])
    gt = np.array([[[1.0, 0.0, 255.0]]])
    result = run_metric(MultiTaskMetric(tasks=['edge'], edge_ods=False), [make_sample(edge_pred=pred, edge_gt=gt)])
    expected = (0.95 * softplus(-0.8) + 0.05 * softplus(0.3)) / 2
    assert result == {'edge.bce_proxy': pytest.approx(expected)}
