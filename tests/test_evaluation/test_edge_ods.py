"""Edges with the BSDS/SEISM protocol: odsF, oisF and AP (``ditask_mm/evaluation/metrics/edge_ods.py``)."""
import logging
import math
import sys

import cv2
import numpy as np
import pytest

from ditask_mm.evaluation import MultiTaskMetric
from ditask_mm.evaluation.metrics.edge_ods import NYUD_MAX_DIST, THRESHOLDS, EdgeODSEvaluator, edge_png_values

from . import LogCapture, make_sample, run_metric


def segments_image(height, width, rows, value=1.0, start=10, length=6):
    """A (1, H, W) map with a horizontal segment of ``length`` pixels on each of ``rows``, ``value`` on it.

    With at most six matchable pixels per image the BSDS matching is exact:
    its random outlier graph is then complete (see the module of
    ``edge_ods``), so the tests built on it do not depend on the matching's
    seed.
    """
    image = np.zeros((1, height, width))
    for row in rows:
        image[0, row, start:start + length] = value
    return image


def score(pairs, **kwargs):
    """Metrics of (pred, gt) pairs through MultiTaskMetric, as a run would compute them."""
    samples = [make_sample(f'{i}.png', edge_pred=pred, edge_gt=gt) for i, (pred, gt) in enumerate(pairs)]
    return run_metric(MultiTaskMetric(tasks=['edge'], **kwargs), samples)


def realistic_image(rng, height, width):
    """Ground-truth edges of random discs and a blurred, noisy probability map around them."""
    labels = np.zeros((height, width), np.uint16)
    rows, cols = np.mgrid[:height, :width]
    for label in range(1, 11):
        row, col, radius = rng.integers(0, height), rng.integers(0, width), rng.integers(20, 150)
        labels[(rows - row) ** 2 + (cols - col) ** 2 < radius ** 2] = label
    gt = (np.abs(cv2.Laplacian(labels, cv2.CV_64F)) > 0).astype(np.float32)
    pred = 4 * cv2.GaussianBlur(gt, (0, 0), 2.0) + 0.05 * cv2.GaussianBlur(
        rng.random((height, width)).astype(np.float32), (0, 0), 3.0)
    return np.clip(pred, 0, 1)[None], gt[None]


# ------------------------------------------------------------------- the protocol's fixed points

def test_perfect_prediction_gives_100():
    pairs = [(segments_image(120, 160, [20 + 10 * i]), segments_image(120, 160, [20 + 10 * i])) for i in range(4)]
    result = score(pairs)
    assert result['edge.odsF'] == 100.0 and result['edge.oisF'] == 100.0


def test_perfect_prediction_of_many_pixels_loses_at_most_a_few_matches():
    """The BSDS matching's random outlier graph drops about 0.25 % of the matchable pairs (module docstring)."""
    gt = segments_image(120, 160, [20, 60, 100], length=140)
    result = score([(gt.copy(), gt)])
    assert 99.0 < result['edge.odsF'] <= 100.0
    stats = EdgeODSEvaluator().image_stats(gt.copy(), gt)
    assert (stats['sum_p'] == 420).all() and (stats['cnt_r'] >= 415).all()
    # the generator is reseeded before every match: unseeded, reruns differ in most cases
    for _ in range(5):
        again = EdgeODSEvaluator().image_stats(gt.copy(), gt)
        np.testing.assert_array_equal(again['cnt_r'], stats['cnt_r'])


def test_one_pixel_shift_inside_the_tolerance_still_gives_100():
    # diagonal 200 px: PASCAL's 0.0075 allows 1.5 px
    pairs = [(segments_image(120, 160, [row + shift]), segments_image(120, 160, [row]))
             for row, shift in ((20, 1), (60, -1), (100, 1))]
    result = score(pairs)
    assert result['edge.odsF'] == 100.0 and result['edge.oisF'] == 100.0


def test_the_tolerance_scales_with_max_dist():
    # a 2 px shift: outside PASCAL's 1.5 px, inside NYUD's 0.011 · 200 = 2.2 px
    pairs = [(segments_image(120, 160, [row + 2]), segments_image(120, 160, [row])) for row in (20, 60)]
    assert score(pairs)['edge.odsF'] == 0.0
    assert score(pairs, edge_max_dist=NYUD_MAX_DIST)['edge.odsF'] == 100.0


def test_empty_prediction_gives_0():
    gt = segments_image(120, 160, [20, 60], length=100)
    result = score([(np.zeros_like(gt), gt)])
    assert (result['edge.odsF'], result['edge.oisF'], result['edge.AP']) == (0.0, 0.0, 0.0)


def test_hand_computed_partial_matches():
    """Two 64×64 images (diagonal 90.5 px, tolerance 0.68 px: only exact matches count).

    The PNG values are floor(255·0.9) = 229 (229/255 = 0.898, above the
    thresholds 0.01…0.89) and floor(255·0.5) = 127 (0.498, above 0.01…0.49),
    which gives three bands: low (49 thresholds), high (0.50…0.89, 40) and top
    (0.90…0.99, nothing predicted).

    Image A: 6 ground-truth pixels; 4 predicted on them at 0.9, 1 more on
    them at 0.5 and 3 false positives at 0.5 far away.
      low: cnt 5, pred 8 (P 5/8, R 5/6, F 5/7); high: cnt 4, pred 4
      (P 1, R 2/3, F 4/5).
    Image B: 6 ground-truth pixels; 2 predicted on them at 0.9, the 4 others
    at 0.5.
      low: cnt 6, pred 6 (F 1); high: cnt 2, pred 2 (R 1/3, F 1/2).

    ODS, counts summed: low R = 11/12, P = 11/14, F = 2·(121/168)/(286/168)
    = 11/13; high R = 6/12, P = 1, F = 2/3; top R = 0, P = 1, F = 0.
    odsF = 11/13.
    OIS: A's best is high (4/5 > 5/7), B's is low: cnt 4 + 6 = 10 of 10
    predicted and 12 to find: R = 5/6, P = 1, oisF = 10/11.
    AP: curve points (R, P) = (0, 1), (1/2, 1), (11/12, 11/14); at r = k/100,
    P = 1 for k = 0…50 and P = 1 − (18/35)(r − 1/2) for k = 51…91 (beyond
    11/12 there is no point). Σ = 51 + 41 − (18/35)(29.11 − 41·0.5) =
    92 − (18/35)·8.61, AP = that / 100 = 0.875720 (SEISM divides by 100
    although it samples 101 points).
    """
    gt_a = segments_image(64, 64, [10], start=5)
    pred_a = np.zeros((1, 64, 64))
    pred_a[0, 10, 5:9] = 0.9
    pred_a[0, 10, 9] = 0.5
    pred_a[0, 40, 5:8] = 0.5
    gt_b = segments_image(64, 64, [20], start=10)
    pred_b = np.zeros((1, 64, 64))
    pred_b[0, 20, 10:12] = 0.9
    pred_b[0, 20, 12:16] = 0.5

    stats_a = EdgeODSEvaluator().image_stats(pred_a, gt_a)
    low, high, top = THRESHOLDS < 0.495, (THRESHOLDS > 0.495) & (THRESHOLDS < 0.895), THRESHOLDS > 0.895
    assert (low.sum(), high.sum(), top.sum()) == (49, 40, 10)
    assert set(stats_a['cnt_r'][low]) == set(stats_a['cnt_p'][low]) == {5} and set(stats_a['sum_p'][low]) == {8}
    assert set(stats_a['cnt_r'][high]) == {4} and set(stats_a['sum_p'][high]) == {4}
    assert set(stats_a['sum_p'][top]) == {0} and set(stats_a['sum_r']) == {6}

    result = score([(pred_a, gt_a), (pred_b, gt_b)])
    expected_ap = (92 - 18 / 35 * 8.61) / 100
    assert expected_ap == pytest.approx(0.875720, abs=1e-6)
    assert result['edge.odsF'] == pytest.approx(100 * 11 / 13, abs=1e-6)
    assert result['edge.oisF'] == pytest.approx(100 * 10 / 11, abs=1e-6)
    assert result['edge.AP'] == pytest.approx(100 * expected_ap, abs=1e-6)


# ------------------------------------------------------------------- ignored pixels

def test_padding_is_cropped_and_ignored_pixels_do_not_count():
    rng = np.random.default_rng(0)
    pred, gt = realistic_image(rng, 96, 128)
    padded_pred = np.zeros((1, 120, 200))
    padded_gt = np.full((1, 120, 200), 255.0)
    padded_pred[:, :96, :128], padded_gt[:, :96, :128] = pred, gt
    padded_pred[0, 100, 10:190] = 1.0  # strong false edges in the padding
    padded_pred[0, 10:90, 150] = 1.0
    evaluator = EdgeODSEvaluator()
    alone, padded = evaluator.image_stats(pred, gt), evaluator.image_stats(padded_pred, padded_gt)
    for key in ('cnt_r', 'sum_r', 'cnt_p', 'sum_p'):
        np.testing.assert_array_equal(padded[key], alone[key], err_msg=key)
    # the same false edges on valid pixels would count
    unpadded_gt = np.where(padded_gt == 255, 0.0, padded_gt)
    assert evaluator.image_stats(padded_pred, unpadded_gt)['sum_p'][0] > alone['sum_p'][0]


def test_interior_ignored_pixels_are_neither_edges_nor_predictions():
    gt = segments_image(120, 160, [20, 60], length=3)
    pred = segments_image(120, 160, [20, 60, 100], length=3)  # row 100: a false edge...
    ignored = gt.copy()
    ignored[0, 95:105] = 255.0  # ...inside an ignored band
    ignored[0, 60, 10] = 255.0  # and one ground-truth pixel of row 60 ignored
    stats = EdgeODSEvaluator().image_stats(pred, ignored)
    assert set(stats['sum_r']) == set(stats['cnt_r']) == {3 + 2}
    assert set(stats['sum_p']) == {3 + 2}  # the predictions on ignored pixels are dropped
    assert score([(pred, ignored)])['edge.odsF'] == 100.0
    # not ignored, the false edge counts: P = 6/9, R = 1
    assert score([(pred, gt)])['edge.odsF'] == pytest.approx(100 * 2 * (6 / 9) / (1 + 6 / 9))


def test_an_all_ignored_set_gives_nan_and_a_warning():
    with LogCapture() as log:
        result = score([(np.ones((1, 8, 8)), np.full((1, 8, 8), 255.0))])
    assert math.isnan(result['edge.odsF']) and math.isnan(result['edge.oisF']) and math.isnan(result['edge.AP'])
    assert any("'edge'" in m and 'edge pixel' in m for m in log.messages(logging.WARNING))


# ------------------------------------------------------------------- PNG values and inputs

def test_png_values_truncate_as_the_reference_cast_and_uint8_scores_the_same():
    np.testing.assert_array_equal(edge_png_values(np.array([0.0, 0.5, 0.9, 1.0, 0.999], np.float32)),
                                  [0, 127, 229, 255, 254])
    pred, gt = realistic_image(np.random.default_rng(3), 64, 80)
    evaluator = EdgeODSEvaluator()
    from_probs = evaluator.image_stats(pred, gt)
    from_png = evaluator.image_stats(edge_png_values(pred), gt)
    for key in ('cnt_r', 'sum_r', 'cnt_p', 'sum_p'):
        np.testing.assert_array_equal(from_png[key], from_probs[key], err_msg=key)
    with pytest.raises(ValueError, match=r'probabilities in \[0, 1\].*NaN'):
        edge_png_values(np.array([0.2, np.nan]))
    with pytest.raises(ValueError, match=r'probabilities in \[0, 1\]'):
        edge_png_values(np.array([0.2, 3.0]))


def test_nms_is_pyedgeeval_fast_nms_of_the_png_values():
    from pyEdgeEval.preprocess import fast_nms
    pred, gt = realistic_image(np.random.default_rng(2), 64, 80)
    suppressed = fast_nms(edge_png_values(pred[0]), return_as_uint8=True)
    assert suppressed.dtype == np.uint8 and (suppressed > 0).sum() < (edge_png_values(pred[0]) > 0).sum()
    with_nms = EdgeODSEvaluator(nms=True).image_stats(pred, gt)
    already_suppressed = EdgeODSEvaluator().image_stats(suppressed[None], gt)
    for key in ('cnt_r', 'sum_r', 'cnt_p', 'sum_p'):
        np.testing.assert_array_equal(with_nms[key], already_suppressed[key], err_msg=key)
    assert not np.array_equal(with_nms['sum_p'], EdgeODSEvaluator().image_stats(pred, gt)['sum_p'])


def test_bad_options_raise_naming_the_option():
    with pytest.raises(ValueError, match='max_dist'):
        MultiTaskMetric(tasks=['edge'], edge_max_dist=0)
    with pytest.raises(ValueError, match='num_workers'):
        EdgeODSEvaluator(num_workers=-1)


# ------------------------------------------------------------------- results, proxy and delta_m

def test_keys_proxy_alongside_and_proxy_only_mode():
    pred, gt = realistic_image(np.random.default_rng(1), 48, 64)
    full = score([(pred, gt)])
    proxy_only = score([(pred, gt)], edge_ods=False)
    assert set(full) == {'edge.odsF', 'edge.oisF', 'edge.AP', 'edge.bce_proxy'}
    assert set(proxy_only) == {'edge.bce_proxy'}
    assert full['edge.bce_proxy'] == pytest.approx(proxy_only['edge.bce_proxy'])
    assert 0 < full['edge.odsF'] <= 100 and 0 < full['edge.AP'] <= 100


def test_delta_m_uses_odsF_and_a_proxy_run_rejects_an_odsF_baseline():
    metric = MultiTaskMetric(tasks=['edge', 'semseg'], baselines=dict(edge=0.5, semseg=50.0))
    assert metric.compute_delta_m({'edge.odsF': 55.0, 'semseg.mIoU': 50.0}) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="edge_ods=False.*edge.odsF.*edge=None"):
        MultiTaskMetric(tasks=['edge'], baselines=dict(edge=50.0), edge_ods=False)
    dropped = MultiTaskMetric(tasks=['edge', 'semseg'], baselines=dict(edge=None, semseg=50.0), edge_ods=False)
    assert set(dropped.baselines) == {'semseg'}
    proxy = MultiTaskMetric(tasks=['edge'], edge_ods=False, baselines=dict(edge=dict(metric='bce_proxy', value=0.2)))
    assert proxy.compute_delta_m({'edge.bce_proxy': 0.1}) == pytest.approx(50.0)  # lower is better


def test_without_pyedgeeval_edge_raises_how_to_install_and_other_tasks_evaluate(monkeypatch):
    monkeypatch.setitem(sys.modules, 'pyEdgeEval._lib', None)  # makes the import fail
    with pytest.raises(ImportError, match=r'pip install pyedgeeval==0\.2\.8.*C\+\+ compiler'):
        EdgeODSEvaluator()
    with pytest.raises(ImportError, match='edge_ods=False'):
        MultiTaskMetric(tasks=['sal', 'edge'])
    sample = make_sample(sal_pred=np.full((1, 2, 2), 0.7), sal_gt=np.ones((1, 2, 2)),
                         edge_pred=np.full((1, 2, 2), 0.7), edge_gt=np.ones((1, 2, 2)))
    assert run_metric(MultiTaskMetric(tasks=['sal']), [sample])['sal.mIoU'] == pytest.approx(100.0)
    assert set(run_metric(MultiTaskMetric(tasks=['sal', 'edge'], edge_ods=False), [sample])) >= {'edge.bce_proxy'}


# ------------------------------------------------------------------- distributed exactness and workers

def test_two_ranks_summing_their_entries_give_the_single_pass_result():
    rng = np.random.default_rng(7)
    pairs = [realistic_image(rng, 60 + 4 * i, 80) for i in range(5)]
    samples = [make_sample(f'{i}.png', edge_pred=pred, edge_gt=gt) for i, (pred, gt) in enumerate(pairs)]
    single = run_metric(MultiTaskMetric(tasks=['edge']), samples, batch_size=5)
    ranks = [MultiTaskMetric(tasks=['edge']), MultiTaskMetric(tasks=['edge'])]
    for rank, metric in enumerate(ranks):  # rank r sees images r, r + 2, ... (DefaultSampler without shuffle)
        for sample in samples[rank::2]:
            metric.process({}, [sample])
    gathered = [None] * 5
    gathered[0::2], gathered[1::2] = ranks[0].results, ranks[1].results
    assert MultiTaskMetric(tasks=['edge']).compute_metrics(gathered) == single
    # one rank's half alone differs: the reduction really pools the images
    assert MultiTaskMetric(tasks=['edge']).compute_metrics(ranks[0].results)['edge.odsF'] != single['edge.odsF']


def test_worker_processes_give_the_in_process_counts():
    rng = np.random.default_rng(11)
    pairs = [realistic_image(rng, 48, 64) for _ in range(3)]
    in_process = EdgeODSEvaluator().batch_stats(pairs)
    evaluator = EdgeODSEvaluator(num_workers=2)
    try:
        in_workers = evaluator.batch_stats(pairs)
    finally:
        evaluator.close()
    for ours, theirs in zip(in_workers, in_process):
        for key in ('cnt_r', 'sum_r', 'cnt_p', 'sum_p'):
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
        assert ours['bce'] == theirs['bce']
