"""Saliency meters against independent re-computations of the public code's meters.

The reference functions below follow the public DiTASK/MTLoRA meters as
described for the project: the prediction becomes a float32 tensor
(``pred.float() / 255``, here the probability itself), the per-image meter
thresholds it with ``> t`` for the float64 ``np.linspace(0.2, 0.9, 15)``
values, the pooled β² = 0.3 meter with ``>= t`` for the float32
``torch.arange(0.05, 1, 0.05)`` values. The comparisons are made by PyTorch,
so its dtype rules are the ones tested.
"""
import numpy as np
import pytest
import torch

from ditask_mm.evaluation import IMAGE_THRESHOLDS, POOLED_THRESHOLDS, MultiTaskMetric, SaliencyEvaluator

from . import make_sample, run_metric

FP16_EXACT = np.array([0.25, 0.5, 0.75], np.float16)


# ------------------------------------------------------------------- reference meters

def reference_beta_counts(batches, double_sigmoid=False):
    """TP, PP, AP per pooled threshold of the public "Beta maxF" meter.

    Args:
        batches: ``(preds, gts)`` per batch, arrays of shape (B, H, W).
        double_sigmoid: Apply the public code's second sigmoid.
    """
    thresholds = torch.arange(0.05, 1, 0.05, dtype=torch.float32)
    tp, pp, ap = (np.zeros(len(thresholds), np.int64) for _ in range(3))
    for preds, gts in batches:
        scores = torch.from_numpy(np.array(preds)).float()
        if double_sigmoid:
            scores = torch.sigmoid(scores)
        target = torch.from_numpy(np.array(gts, np.float32))
        valid = target != 255
        positive = (target != 0) & valid
        for index, threshold in enumerate(thresholds):
            mask = (scores >= threshold) & valid
            tp[index] += int((mask & positive).sum())
            pp[index] += int(mask.sum())
            ap[index] += int(positive.sum())
    return tp, pp, ap


def reference_beta_maxf(batches, double_sigmoid=False):
    """maxF (percent) of the public β² = 0.3 meter, NaN F set to 0."""
    tp, pp, ap = (c.astype(np.float64) for c in reference_beta_counts(batches, double_sigmoid))
    with np.errstate(divide='ignore', invalid='ignore'):
        precision, recall = tp / pp, tp / ap
        f = 1.3 * precision * recall / (0.3 * precision + recall)
    f[f != f] = 0
    return 100 * f.max()


def reference_no_beta_entries(batches):
    """J, P, R entries of the public per-image meter, B = 1 squeeze included.

    A batch of one is squeezed to [H, W] by the public ``get_output``; the
    meter then takes ``b = pred.size(0)`` = H and scores each row.

    Returns:
        Three arrays of shape (entries, 15).
    """
    jaccards, precisions, recalls = [], [], []
    for preds, gts in batches:
        preds, gts = np.squeeze(np.array(preds)), np.squeeze(np.array(gts))
        scores = torch.from_numpy(preds).float()
        count = scores.size(0)
        entries = np.zeros((3, count, len(IMAGE_THRESHOLDS)))
        for j, threshold in enumerate(np.linspace(0.2, 0.9, 15)):
            masks = (scores > threshold).numpy()
            for i in range(count):
                truth, mask = gts[i].astype(bool), masks[i]
                tp, fp, fn = (truth & mask).sum(), (mask & ~truth).sum(), (truth & ~mask).sum()
                both_empty = truth.sum() == 0 and mask.sum() == 0
                entries[0, i, j] = 1 if both_empty else tp / float((truth | mask).sum())
                entries[1, i, j] = tp / (tp + fp + 1e-12)
                entries[2, i, j] = tp / (tp + fn + 1e-12)
        jaccards.append(entries[0])
        precisions.append(entries[1])
        recalls.append(entries[2])
    return tuple(np.concatenate(e) for e in (jaccards, precisions, recalls))


def reference_no_beta_scores(batches):
    """``(mIoU, maxF, number of entries)`` of the public per-image meter (percent)."""
    jaccard, precision, recall = reference_no_beta_entries(batches)
    mean_p, mean_r = precision.mean(0), recall.mean(0)
    f = 2 * mean_p * mean_r / (mean_p + mean_r + 1e-12)
    return 100 * jaccard.mean(0).max(), 100 * f.max(), len(jaccard)


# ------------------------------------------------------------------- helpers

def sal_sample(pred, gt, path='img.png'):
    return make_sample(path, sal_pred=np.asarray(pred)[None], sal_gt=np.asarray(gt, np.float32)[None])


def evaluate(samples, batch_size=2, **options):
    return run_metric(MultiTaskMetric(tasks=['sal'], **options), samples, batch_size=batch_size)


def tie_heavy_images(dtype, count=3, shape=(6, 7), seed=0):
    """Predictions mostly *on* thresholds (both sets, fp16-exact values), some random."""
    rng = np.random.default_rng(seed)
    candidates = np.r_[IMAGE_THRESHOLDS.astype(dtype), POOLED_THRESHOLDS.astype(dtype),
                       FP16_EXACT.astype(dtype), rng.random(6).astype(dtype)]
    preds = rng.choice(candidates, (count,) + shape).astype(dtype)
    gts = (rng.random((count,) + shape) > 0.5).astype(np.float32)
    return preds, gts


# ------------------------------------------------------------------- item 2: threshold values and ties

def test_pooled_thresholds_are_the_float32_torch_arange_bit_for_bit():
    from ditask_mm.evaluation.metrics.saliency import torch_arange_float32
    expected = torch.arange(0.05, 1, 0.05, dtype=torch.float32).numpy()
    assert POOLED_THRESHOLDS.dtype == np.float32
    np.testing.assert_array_equal(POOLED_THRESHOLDS.view(np.uint32), expected.view(np.uint32))
    assert POOLED_THRESHOLDS[11] == np.float32(0.59999996) and POOLED_THRESHOLDS[11] < np.float32(0.6)
    # the NumPy model of the kernel holds beyond this one range
    for start, stop, step in [(0.0, 1.0, 0.01), (0.1, 3.3, 0.1), (0.05, 1.0, 0.05), (-2.0, 2.0, 0.3)]:
        torch_values = torch.arange(start, stop, step, dtype=torch.float32).numpy()
        np.testing.assert_array_equal(torch_arange_float32(start, stop, step).view(np.uint32),
                                      torch_values.view(np.uint32))


def test_pooled_meter_counts_a_prediction_at_a_float32_threshold_as_positive():
    evaluator = SaliencyEvaluator()
    # one pixel exactly at each pooled threshold (0.59999996 included), all positive
    at_thresholds = evaluator.image_stats(POOLED_THRESHOLDS[None], np.ones((1, 19), np.float32))
    np.testing.assert_array_equal(at_thresholds['pp'], np.arange(19, 0, -1))  # #(p >= t_k) = 19 - k
    # fp16 outputs land exactly on 0.25, 0.5 and 0.75
    fp16 = evaluator.image_stats(FP16_EXACT[None], np.ones((1, 3), np.float32))
    index = {float(t): k for k, t in enumerate(POOLED_THRESHOLDS)}
    assert fp16['pp'][index[0.25]] == 3 and fp16['pp'][index[0.5]] == 2 and fp16['pp'][index[0.75]] == 1
    # a single positive pixel on the lowest threshold: F = 1 there (0 with "> t")
    result = evaluate([sal_sample(np.array([[0.05, 0.01]], np.float32), [[1, 0]])])
    assert result['sal.maxF_beta0.3'] == pytest.approx(100.0)


def test_float64_predictions_are_rounded_to_float32_before_the_comparison():
    # 0.59999995 < t = 0.59999996 in float64 but rounds to t in float32 (the reference's pred.float());
    # 0.59999992 rounds to the float32 value below t
    pred = np.array([[0.59999995, 0.59999992]])
    assert np.float32(pred[0, 0]) == POOLED_THRESHOLDS[11] and np.float32(pred[0, 1]) < POOLED_THRESHOLDS[11]
    stats = SaliencyEvaluator().image_stats(pred[None], np.ones((1, 1, 2), np.float32))
    tp, pp, ap = reference_beta_counts([(pred[None], np.ones((1, 1, 2)))])
    np.testing.assert_array_equal(stats['pp'], pp)
    assert stats['pp'][11] == 1


@pytest.mark.parametrize('dtype', [np.float64, np.float32, np.float16])
def test_pooled_meter_matches_the_reference_on_ties(dtype):
    preds, gts = tie_heavy_images(dtype)
    gts[1, 0, :3] = 255  # padding is ignored by both
    evaluator = SaliencyEvaluator()
    stats = [evaluator.image_stats(p[None], g[None]) for p, g in zip(preds, gts)]
    tp, pp, ap = reference_beta_counts([(preds, gts)])
    np.testing.assert_array_equal(np.sum([s['tp'] for s in stats], 0), tp)
    np.testing.assert_array_equal(np.sum([s['pp'] for s in stats], 0), pp)
    assert sum(s['ap'] for s in stats) == ap[0]
    result = evaluate([sal_sample(p, g) for p, g in zip(preds, gts)])
    assert result['sal.maxF_beta0.3'] == pytest.approx(reference_beta_maxf([(preds, gts)]), abs=1e-12)


@pytest.mark.parametrize('dtype', [np.float64, np.float32, np.float16])
def test_per_image_meter_exact_ties_match_the_reference(dtype):
    # one pixel exactly on each of the 15 thresholds (as far as the dtype allows)
    on_thresholds = IMAGE_THRESHOLDS.astype(dtype)[None]
    preds = np.stack([on_thresholds, on_thresholds[:, ::-1]])
    gts = np.stack([np.ones((1, 15)), (np.arange(15) % 2)[None]]).astype(np.float32)
    evaluator = SaliencyEvaluator()
    reference = reference_no_beta_entries([(preds, gts)])
    for image in range(2):
        stats = evaluator.image_stats(preds[image][None], gts[image][None])
        for key, expected in zip(('jaccard', 'precision', 'recall'), reference):
            np.testing.assert_allclose(stats[key], expected[image], rtol=0, atol=1e-15, err_msg=key)
    if dtype == np.float16:
        # float16(0.3) = 0.30005 is above float32(0.3) = 0.3: positive at t = 0.3, as in the reference
        assert float(np.float16(0.3)) > float(np.float32(0.3))
        counted = evaluator.image_stats(np.array([[np.float16(0.3)]]), np.ones((1, 1), np.float32))
        assert counted['jaccard'][2] == 1.0
    else:
        # exactly on a threshold is negative (strict ">")
        counted = evaluator.image_stats(np.array([[0.3]], dtype), np.ones((1, 1), np.float32))
        assert counted['jaccard'][2] == 0.0 and counted['jaccard'][1] == 1.0


# ------------------------------------------------------------------- item 5: reference-bug options

def test_options_are_off_by_default_and_need_the_sal_task():
    metric = MultiTaskMetric(tasks=['sal'])
    assert not metric.sal_beta_double_sigmoid and not metric.sal_batch_of_one_rows
    evaluator = metric.evaluators()['sal']
    assert not evaluator.beta_double_sigmoid and not evaluator.batch_of_one_rows
    for option in ('sal_beta_double_sigmoid', 'sal_batch_of_one_rows'):
        with pytest.raises(ValueError, match=option):
            MultiTaskMetric(tasks=['semseg'], num_classes=dict(semseg=2), **{option: True})


def test_beta_double_sigmoid_reproduces_the_public_beta_maxf():
    rng = np.random.default_rng(1)
    # probabilities around the double-sigmoid boundaries p = 0.2007, 0.4055, 0.6190, 0.8473
    boundaries = np.array([0.2007, 0.4055, 0.6190, 0.8473])
    preds = rng.choice(np.r_[boundaries, boundaries + 1e-4, boundaries - 1e-4, rng.random(8)], (3, 5, 6))
    preds = preds.astype(np.float32)
    gts = (rng.random((3, 5, 6)) > 0.6).astype(np.float32)
    samples = [sal_sample(p, g, f'{i}.png') for i, (p, g) in enumerate(zip(preds, gts))]
    default = evaluate(samples)
    buggy = evaluate(samples, sal_beta_double_sigmoid=True)
    assert default['sal.maxF_beta0.3'] == pytest.approx(reference_beta_maxf([(preds, gts)]), abs=1e-12)
    assert buggy['sal.maxF_beta0.3'] == pytest.approx(reference_beta_maxf([(preds, gts)], True), abs=1e-12)
    assert buggy['sal.maxF_beta0.3'] != pytest.approx(default['sal.maxF_beta0.3'], abs=1e-3)
    # the per-image meter is untouched
    assert buggy['sal.mIoU'] == default['sal.mIoU'] and buggy['sal.maxF'] == default['sal.maxF']

    stats = SaliencyEvaluator(beta_double_sigmoid=True).image_stats(preds[0][None], gts[0][None])
    tp, pp, _ = reference_beta_counts([(preds[:1], gts[:1])], double_sigmoid=True)
    np.testing.assert_array_equal(stats['pp'], pp)
    np.testing.assert_array_equal(stats['tp'], tp)
    assert np.all(stats['pp'][POOLED_THRESHOLDS <= 0.5] == preds[0].size)  # every pixel positive
    assert np.all(stats['pp'][POOLED_THRESHOLDS >= 0.75] == 0)  # nothing reaches sigmoid(1) = 0.731


def test_beta_double_sigmoid_uses_the_float32_path_for_float64_inputs():
    # float64 probabilities within a few float32 steps of sigmoid(p) = t for t = 0.55 ... 0.70:
    # the reference rounds p to float32 and takes a float32 sigmoid, so ties at t count
    logits = np.log(POOLED_THRESHOLDS[10:14] / (1 - POOLED_THRESHOLDS[10:14])).astype(np.float64)
    preds = (logits[:, None] + np.linspace(-3e-7, 3e-7, 401))[None]
    gts = np.ones_like(preds, np.float32)
    stats = SaliencyEvaluator(beta_double_sigmoid=True).image_stats(preds, gts)
    tp, pp, _ = reference_beta_counts([(preds, gts)], double_sigmoid=True)  # same tensor layout
    np.testing.assert_array_equal(stats['pp'], pp)
    np.testing.assert_array_equal(stats['tp'], tp)
    float64_sigmoid = 1 / (1 + np.exp(-preds))
    float64_pp = [(float64_sigmoid >= t).sum() for t in POOLED_THRESHOLDS.astype(np.float64)]
    assert list(stats['pp'][10:14]) != float64_pp[10:14]


def test_batch_of_one_rows_reproduces_the_public_entries():
    rng = np.random.default_rng(3)
    height, width = 8, 5
    preds = rng.random((3, height, width)).astype(np.float32)
    gts = (rng.random((3, height, width)) > 0.5).astype(np.float32)
    gts[2, :2] = 0  # rows without positives: J = 1 or 0 per row
    samples = [sal_sample(p, g, f'{i}.png') for i, (p, g) in enumerate(zip(preds, gts))]
    batches = [(preds[:2], gts[:2]), (preds[2:], gts[2:])]  # 2 + 1 images

    metric = MultiTaskMetric(tasks=['sal'], sal_batch_of_one_rows=True)
    buggy = run_metric(metric, samples, batch_size=2)
    miou, maxf, entries = reference_no_beta_scores(batches)
    assert entries == 2 + height == 10
    assert len(metric.results) == 3  # still one result per image (DDP truncation)
    assert metric.results[2]['sal']['jaccard'].shape == (height, 15)
    assert buggy['sal.mIoU'] == pytest.approx(miou, abs=1e-12)
    assert buggy['sal.maxF'] == pytest.approx(maxf, abs=1e-12)

    # the default is one entry per image, whatever the batching
    default = evaluate(samples, batch_size=2)
    miou_3, maxf_3, entries_3 = reference_no_beta_scores([(preds, gts)])
    assert entries_3 == 3
    assert default['sal.mIoU'] == pytest.approx(miou_3, abs=1e-12)
    assert default['sal.maxF'] == pytest.approx(maxf_3, abs=1e-12)
    assert buggy['sal.mIoU'] != pytest.approx(default['sal.mIoU'], abs=1e-6)
    # the pooled meter handles B = 1 in the reference too
    assert buggy['sal.maxF_beta0.3'] == default['sal.maxF_beta0.3']
    # without a batch of one the option changes nothing
    assert evaluate(samples, batch_size=3, sal_batch_of_one_rows=True) == evaluate(samples, batch_size=3)


def test_batch_of_one_rows_skips_padded_rows():
    pred = np.random.default_rng(4).random((4, 3)).astype(np.float32)
    gt = (pred > 0.5).astype(np.float32)
    gt[3] = 255  # a padding row
    stats = SaliencyEvaluator(batch_of_one_rows=True).batch_stats([(pred[None], gt[None])])
    assert len(stats) == 1 and stats[0]['jaccard'].shape == (3, 15)
    reference = reference_no_beta_entries([(pred[None, :3], gt[None, :3])])
    np.testing.assert_allclose(stats[0]['jaccard'], reference[0], rtol=0, atol=1e-15)
