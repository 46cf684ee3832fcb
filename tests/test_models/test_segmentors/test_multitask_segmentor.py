"""MultiTaskSegmentor: the mmseg segmentor contract, losses, predictions, fast inference."""
import copy

import pytest
import torch
from mmengine.optim import OptimWrapper

from ditask_mm.adapters import adapter_layers
from ditask_mm.adapters.svd_cache import SVDCache
from ditask_mm.models.losses import MTLCrossEntropyLoss
from ditask_mm.registry import MODELS

from .utils import build_tiny_segmentor, make_batch, tiny_segmentor_cfg


def test_segmentor_contract_preprocess_loss_train_val_tensor():
    model = build_tiny_segmentor()
    batch = make_batch()
    data = model.data_preprocessor(copy.deepcopy(batch), training=True)
    assert data['inputs'].shape == (2, 3, 64, 64)  # padded to the largest size, divisible by 32
    losses = model(**data, mode='loss')
    assert set(losses) == {'semseg.loss_ce', 'human_parts.loss_ce', 'sal.loss_balanced_bce', 'normals.loss_normals'}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    optim = OptimWrapper(torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01))
    log_vars = model.train_step(copy.deepcopy(batch), optim)
    assert 'loss' in log_vars and torch.isfinite(log_vars['loss'])
    model.eval()
    results = model.val_step(copy.deepcopy(batch))
    assert len(results) == 2
    outputs = model(**model.data_preprocessor(copy.deepcopy(batch)), mode='tensor')
    assert {t: tuple(o.shape) for t, o in outputs.items()} == {
        'semseg': (2, 21, 64, 64), 'human_parts': (2, 7, 64, 64), 'sal': (2, 1, 64, 64), 'normals': (2, 3, 64, 64)}


def test_loss_weights_and_keys():
    model = build_tiny_segmentor(loss_decode=dict(semseg=dict(type='MTLCrossEntropyLoss', loss_weight=3.0)))
    data = model.data_preprocessor(make_batch(), training=True)
    weighted = model(**data, mode='loss')
    outputs = model(**data, mode='tensor')
    target = torch.stack([s.gt_sem_seg.data[0] for s in data['data_samples']]).long()
    raw = MTLCrossEntropyLoss()(outputs['semseg'], target)
    torch.testing.assert_close(weighted['semseg.loss_ce'], 3.0 * raw)  # the weight is applied once
    weights = {t: head.loss_decode.loss_weight for t, head in model.decode_heads.items()}
    assert weights == {'semseg': 3.0, 'human_parts': 2.0, 'sal': 5.0, 'normals': 10.0}
    # every other task's loss is its head's weighted loss, unscaled by the segmentor
    for task, key in (('sal', 'sal.loss_balanced_bce'), ('normals', 'normals.loss_normals')):
        head = model.decode_heads[task]
        target = model._stack_targets(task, data['data_samples'])
        torch.testing.assert_close(weighted[key], head.loss_decode(outputs[task], target))
        assert head.loss_decode.loss_weight == {'sal': 5.0, 'normals': 10.0}[task]


def test_gradients_reach_every_theta_and_head_and_nothing_frozen():
    model = build_tiny_segmentor()
    model.train()
    data = model.data_preprocessor(make_batch(), training=True)
    sum(model(**data, mode='loss').values()).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, f'{name} got no gradient'
        else:
            assert param.grad is None, f'frozen {name} got a gradient'
    thetas = [n for n, p in model.named_parameters() if 'theta_' in n]
    heads = [n for n, p in model.named_parameters() if n.startswith('decode_heads.')]
    assert thetas and heads
    assert all(model.get_parameter(n).requires_grad for n in thetas + heads)


def test_all_ignore_human_parts_batch_gives_zero_loss_not_nan():
    model = build_tiny_segmentor()
    data = model.data_preprocessor(make_batch(no_person=True), training=True)
    losses = model(**data, mode='loss')
    assert losses['human_parts.loss_ce'].item() == 0.0
    sum(losses.values()).backward()


def test_predictions_per_task_at_original_size():
    model = build_tiny_segmentor()
    model.eval()
    batch = make_batch(sizes=((64, 48), (40, 64)))
    batch['data_samples'][0].set_metainfo(dict(ori_shape=(128, 96)))  # image was resized by the pipeline
    with torch.no_grad():
        results = model.test_step(batch)
    first, second = results
    assert first.pred_sem_seg.data.shape == (1, 128, 96) and first.pred_sem_seg.data.dtype == torch.int64
    assert second.pred_sem_seg.data.shape == (1, 40, 64)  # padding removed
    assert second.pred_human_parts.data.max() < 7
    sal = second.pred_saliency.data
    assert sal.shape == (1, 40, 64) and sal.min() >= 0 and sal.max() <= 1 and sal.dtype == torch.float32
    norms = second.pred_normals.data.norm(dim=0)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    # the prediction reads only the unpadded part: the padded batch gives the same crop
    with torch.no_grad():
        raw = model(**model.data_preprocessor(make_batch(sizes=((64, 48), (40, 64)))), mode='tensor')
    assert torch.equal(raw['semseg'][1, :, :40, :64].argmax(0), second.pred_sem_seg.data[0])


def test_preprocessor_pads_each_target_with_its_own_value():
    from ditask_mm.models import MultiTaskDataPreProcessor
    pre = MultiTaskDataPreProcessor(size_divisor=32)
    batch = make_batch(sizes=((40, 50), (30, 20)), tasks=('semseg', 'sal', 'normals', 'depth', 'edge'))
    for training in (True, False):
        out = pre(copy.deepcopy(batch), training=training)
        sample = out['data_samples'][1]
        assert out['inputs'].shape == (2, 3, 64, 64)
        assert sample.img_shape == (30, 20) and sample.pad_shape == (64, 64)
        assert (sample.gt_sem_seg.data[:, 30:, :] == 255).all() and (sample.gt_sem_seg.data[:, :, 20:] == 255).all()
        assert (sample.gt_normals.data[:, 30:, :] == 255).all()
        assert (sample.gt_depth.data[:, :, 20:] == 0).all()
        assert (sample.gt_edge.data[:, 30:, :] == 255).all() and (sample.gt_saliency.data[:, 30:, :] == 255).all()
        assert torch.equal(sample.gt_sem_seg.data[:, :30, :20], batch['data_samples'][1].gt_sem_seg.data)
    assert out['inputs'][1, :, 30:, :].abs().sum() == 0
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    expected = (batch['inputs'][0].float().flip(0) - mean) / std  # BGR -> RGB, normalised
    torch.testing.assert_close(out['inputs'][0, :, :40, :50], expected)


def test_eval_builds_adapted_weights_once_and_runs_the_trunk_once():
    model = build_tiny_segmentor()
    model.eval()
    calls = {'rebuild': 0, 'trunk': 0}
    original = SVDCache.rebuild

    def counting_rebuild(self, values):
        calls['rebuild'] += 1
        return original(self, values)

    SVDCache.rebuild = counting_rebuild
    handle = model.backbone.stages[0].blocks[0].register_forward_hook(
        lambda *args: calls.__setitem__('trunk', calls['trunk'] + 1))
    try:
        with torch.no_grad():
            model.test_step(make_batch())
            first = calls['rebuild']
            model.test_step(make_batch())
    finally:
        SVDCache.rebuild = original
        handle.remove()
    layers = list(adapter_layers(model))
    per_task = sum(len(layer.tasks) for _, layer in layers)
    shared = sum(layer.theta_shared is not None for _, layer in layers)
    assert first == shared + per_task  # every adapted weight built exactly once
    assert calls['rebuild'] == first  # and not again for the next batch
    assert calls['trunk'] == 2  # the shared trunk ran once per batch, not once per task


def test_bad_configs_fail_fast():
    from mmengine.registry import init_default_scope
    init_default_scope('ditask_mm')
    cfg = tiny_segmentor_cfg()
    cfg['tasks'] = ['segmentation', 'sal']
    with pytest.raises(KeyError, match=r"unknown task\(s\) \['segmentation'\]"):
        MODELS.build(cfg)
    cfg = tiny_segmentor_cfg()
    template = cfg.pop('decode_head')
    without_sal = (('semseg', 21), ('human_parts', 7), ('normals', 3))
    cfg['decode_heads'] = {t: dict(template, out_channels=c) for t, c in without_sal}
    with pytest.raises(KeyError, match=r"no head for task\(s\) \['sal'\]"):
        MODELS.build(cfg)
    cfg = tiny_segmentor_cfg()
    cfg['backbone']['tasks'] = ['semseg']
    with pytest.raises(ValueError, match='backbone tasks'):
        MODELS.build(cfg)
    model = build_tiny_segmentor()
    batch = make_batch()
    del batch['data_samples'][1].gt_saliency
    with pytest.raises(KeyError, match="data sample 1 .* has no gt_saliency for task 'sal'"):
        model(**model.data_preprocessor(batch, training=True), mode='loss')
