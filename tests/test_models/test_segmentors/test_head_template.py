"""MultiTaskSegmentor heads from one template: out_channels, losses, overrides, errors, checkpoint keys."""
import copy

import pytest
import torch

from ditask_mm.models.decode_heads import MTLHRNetHead
from ditask_mm.models.losses import BalancedBCELoss, DepthL1Loss, MTLCrossEntropyLoss, NormalsL1Loss
from ditask_mm.models.segmentors import TASK_LOSSES
from ditask_mm.registry import MODELS

from .utils import build_tiny_segmentor, make_batch, tiny_segmentor_cfg

ALL_TASKS = ('semseg', 'human_parts', 'sal', 'normals', 'depth', 'edge')


def build(**kwargs):
    return build_tiny_segmentor(**kwargs)


def test_template_gives_each_task_its_channels_and_loss():
    model = build(tasks=ALL_TASKS, num_classes=dict(semseg=40, human_parts=7))
    out = {t: h.out_channels for t, h in model.decode_heads.items()}
    assert out == dict(semseg=40, human_parts=7, sal=1, normals=3, depth=1, edge=1)
    losses = {t: (type(h.loss_decode), h.loss_decode.loss_weight) for t, h in model.decode_heads.items()}
    assert losses == dict(semseg=(MTLCrossEntropyLoss, 1.0), human_parts=(MTLCrossEntropyLoss, 2.0),
                          sal=(BalancedBCELoss, 5.0), normals=(NormalsL1Loss, 10.0), depth=(DepthL1Loss, 1.0),
                          edge=(BalancedBCELoss, 50.0))
    assert model.decode_heads['edge'].loss_decode.pos_weight == 0.95
    assert model.decode_heads['sal'].loss_decode.pos_weight is None
    assert all(h.projections[0].out_channels == 4 for h in model.decode_heads.values())  # the template's widths


def test_loss_keys_of_every_task_and_head_loss_api():
    model = build(tasks=ALL_TASKS)
    data = model.data_preprocessor(make_batch(tasks=ALL_TASKS), training=True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'semseg.loss_ce', 'human_parts.loss_ce', 'sal.loss_balanced_bce', 'edge.loss_balanced_bce',
                           'normals.loss_normals', 'depth.loss_depth'}
    # the segmentor's value of a task is exactly what its head reports
    feats = model.extract_feat(data['inputs'])
    target = model._stack_targets('depth', data['data_samples'])
    head_losses = model.decode_heads['depth'].loss(feats['depth'], target, out_size=tuple(data['inputs'].shape[-2:]))
    assert set(head_losses) == {'loss_depth'}
    torch.testing.assert_close(head_losses['loss_depth'], losses['depth.loss_depth'])


def test_override_changes_one_head_only_and_full_old_style_heads_still_build():
    model = build(decode_heads=dict(sal=dict(projection_channels=(2, 2, 2, 2),
                                             loss_decode=dict(type='BalancedBCELoss', loss_weight=7.0))))
    assert model.decode_heads['sal'].projections[0].out_channels == 2
    assert model.decode_heads['sal'].loss_decode.loss_weight == 7.0
    assert model.decode_heads['semseg'].projections[0].out_channels == 4
    # the old form: one full head config per task, no template
    cfg = tiny_segmentor_cfg()
    template = cfg.pop('decode_head')
    cfg.pop('num_classes')
    cfg['decode_heads'] = {t: dict(template, out_channels=c) for t, c in
                           (('semseg', 21), ('human_parts', 7), ('sal', 1), ('normals', 3))}
    torch.manual_seed(0)
    old = MODELS.build(cfg)
    new = build()
    assert {t: h.out_channels for t, h in old.decode_heads.items()} == \
        {t: h.out_channels for t, h in new.decode_heads.items()}
    # checkpoint keys are the same (decode_heads.<task>.…), so existing checkpoints load unchanged
    assert list(old.state_dict()) == list(new.state_dict())
    assert any(k.startswith('decode_heads.normals.classifier.') for k in new.state_dict())
    old.load_state_dict(new.state_dict())  # strict


def test_task_losses_apply_when_loss_decode_is_omitted_and_partial_entries_merge_per_task():
    model = build(loss_decode=dict(sal=dict(type='BalancedBCELoss', loss_weight=1.0),
                                   depth=dict(type='DepthL1Loss', loss_weight=3.0)))  # depth: not a task here
    assert model.decode_heads['sal'].loss_decode.loss_weight == 1.0
    assert model.decode_heads['human_parts'].loss_decode.loss_weight == 2.0  # the base config's weight
    # an entry without a type changes the loss of its task, as a config override would
    model = build(tasks=('semseg', 'edge'), loss_decode=dict(edge=dict(loss_weight=1.0)))
    edge = model.decode_heads['edge'].loss_decode
    assert (type(edge), edge.pos_weight, edge.loss_weight) == (BalancedBCELoss, 0.95, 1.0)
    assert dict(TASK_LOSSES['edge']) == dict(type='BalancedBCELoss', pos_weight=0.95)  # untouched, no weight
    # built by hand without loss_decode: each task's loss, every weight the losses' own 1
    model = build(tasks=ALL_TASKS, loss_decode=None)
    losses = {t: (type(h.loss_decode), h.loss_decode.loss_weight) for t, h in model.decode_heads.items()}
    assert losses == dict(semseg=(MTLCrossEntropyLoss, 1.0), human_parts=(MTLCrossEntropyLoss, 1.0),
                          sal=(BalancedBCELoss, 1.0), normals=(NormalsL1Loss, 1.0), depth=(DepthL1Loss, 1.0),
                          edge=(BalancedBCELoss, 1.0))
    assert model.decode_heads['edge'].loss_decode.pos_weight == 0.95


def test_template_errors_name_the_key_and_the_fix():
    bad = [
        (dict(num_classes=dict(human_parts=7)), KeyError, r"num_classes has no entry for the label task 'semseg'"),
        (dict(num_classes=dict(semseg=21, human_parts=7, sal=1)), ValueError, r"\['sal'\], which are not label"),
        (dict(num_classes=dict(semseg=21, human_parts=7, segmentation=3)), KeyError, r"unknown task\(s\) \['segm"),
        (dict(loss_decode=dict(saliency=dict(type='BalancedBCELoss'))), KeyError, r"loss_decode .*\['saliency'\]"),
        (dict(decode_heads=dict(parts=dict())), KeyError, r"decode_heads .*\['parts'\]"),
        (dict(loss_weights=dict(semseg=2.0)), ValueError, r'loss_decode.<task>.loss_weight'),
        (dict(losses=dict(semseg=dict(type='MTLCrossEntropyLoss'))), ValueError, r'no longer takes losses'),
    ]
    for kwargs, error, message in bad:
        with pytest.raises(error, match=message):
            MODELS.build(tiny_segmentor_cfg(**kwargs))
    cfg = tiny_segmentor_cfg()
    del cfg['tasks']  # a config whose tasks were never resolved into the model
    with pytest.raises(ValueError, match=r'top-level tasks=\[...\].*resolve_tasks'):
        MODELS.build(cfg)
    cfg = tiny_segmentor_cfg()
    cfg['decode_head']['out_channels'] = 5
    with pytest.raises(ValueError, match=r"decode_head .*\['out_channels'\]"):
        MODELS.build(cfg)
    cfg = tiny_segmentor_cfg()
    del cfg['decode_head']['type']
    with pytest.raises(KeyError, match="head of task 'semseg' has no type"):
        MODELS.build(cfg)


def test_head_without_loss_decode_predicts_but_refuses_a_loss():
    head = MTLHRNetHead([8, 16], out_channels=1, projection_channels=(2, 2))
    feats = [torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2)]
    assert head(feats).shape == (1, 1, 4, 4)
    with pytest.raises(RuntimeError, match='without loss_decode'):
        head.loss(feats, torch.zeros(1, 4, 4))
    weighted = MTLHRNetHead([8, 16], out_channels=1, projection_channels=(2, 2),
                            loss_decode=dict(type='DepthL1Loss', loss_weight=2.0))
    weighted.load_state_dict(head.state_dict())  # the loss adds no state
    target = torch.rand(1, 1, 8, 8) + 0.5
    loss = weighted.loss(feats, target, out_size=(8, 8))
    torch.testing.assert_close(loss['loss_depth'], 2.0 * DepthL1Loss()(head(feats, out_size=(8, 8)), target))


def test_config_dicts_are_not_mutated():
    cfg = tiny_segmentor_cfg(loss_decode=dict(sal=dict(type='BalancedBCELoss', loss_weight=1.0)))
    before = copy.deepcopy(cfg)
    MODELS.build(cfg)
    assert cfg == before
