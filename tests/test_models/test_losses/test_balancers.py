"""Loss balancers: formulas against hand computations, segmentor integration, checkpoints, hook and configs."""
import copy
import math
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper

from ditask_mm.models.losses.balancers import DWA, FAMO, FixedWeights, LossBalancerHook, UncertaintyWeighting
from ditask_mm.registry import HOOKS, MODELS

from ..test_segmentors.utils import PASCAL_TASKS, build_tiny_segmentor, make_batch

REPO = Path(__file__).resolve().parents[3]
SMALL = ((32, 32), (32, 24))  # image sizes of the training-step tests (fast)
BALANCER_CFGS = dict(fixed=dict(type='FixedWeights'), uncertainty=dict(type='UncertaintyWeighting'),
                     dwa=dict(type='DWA'), famo=dict(type='FAMO'))


def leaf_losses(a, b):
    return dict(a=torch.tensor(a, requires_grad=True), b=torch.tensor(b, requires_grad=True))


# ------------------------------------------------------------------------------------------------ formulas
def test_uncertainty_value_and_gradients_match_the_hand_computation():
    balancer = UncertaintyWeighting(tasks=['a', 'b'], regression_tasks=['b'])
    with torch.no_grad():
        balancer.log_vars.copy_(torch.tensor([0.5, -1.0]))
    task_losses = leaf_losses(2.0, 3.0)
    losses, log = balancer(task_losses)
    assert set(losses) == {'a', 'b', 'balance.loss_uncertainty'}
    # a (factor 1): exp(-0.5)·2 + 0.5; b (regression, factor 0.5): 0.5·(exp(1)·3 − 1)
    assert losses['a'].item() == pytest.approx(math.exp(-0.5) * 2.0)
    assert losses['b'].item() == pytest.approx(0.5 * math.e * 3.0)
    assert losses['balance.loss_uncertainty'].item() == pytest.approx(0.5 + 0.5 * -1.0)
    assert log['balance.weight.a'].item() == pytest.approx(math.exp(-0.5))
    assert log['balance.weight.b'].item() == pytest.approx(0.5 * math.e)
    sum(losses.values()).backward()
    # d/ds_t = f_t·(1 − exp(−s_t)·L_t); d/dL_t = f_t·exp(−s_t)
    expected = [1 - math.exp(-0.5) * 2.0, 0.5 * (1 - math.e * 3.0)]
    torch.testing.assert_close(balancer.log_vars.grad, torch.tensor(expected))
    assert task_losses['a'].grad.item() == pytest.approx(math.exp(-0.5))
    assert task_losses['b'].grad.item() == pytest.approx(0.5 * math.e)


def test_uncertainty_refuses_regression_tasks_outside_its_tasks():
    with pytest.raises(ValueError, match=r"regression_tasks names \['depth'\]"):
        UncertaintyWeighting(tasks=['semseg'], regression_tasks=['depth'])


def dwa_weights(last, second_last, temperature=2.0):
    """2·softmax(r / temperature) for two tasks, written out."""
    exps = [math.exp(last[i] / second_last[i] / temperature) for i in range(2)]
    return [2 * e / sum(exps) for e in exps]


def test_dwa_weights_after_three_epochs_of_known_losses():
    balancer = DWA(tasks=['a', 'b'])
    epochs = [[(2.0, 4.0), (4.0, 4.0)],  # averages (3, 4)
              [(1.0, 4.0), (2.0, 2.0)],  # averages (1.5, 3)
              [(1.5, 1.0), (1.5, 2.0)]]  # averages (1.5, 1.5)
    expected = [[1.0, 1.0], [1.0, 1.0], dwa_weights((1.5, 3.0), (3.0, 4.0))]
    for epoch, steps in enumerate(epochs):
        for a, b in steps:
            losses, log = balancer(leaf_losses(a, b))
            assert [log['balance.weight.a'].item(), log['balance.weight.b'].item()] == pytest.approx(expected[epoch])
            assert losses['a'].item() == pytest.approx(expected[epoch][0] * a)
        balancer.epoch_end()
    assert int(balancer.completed_epochs) == 3
    fourth = dwa_weights((1.5, 1.5), (1.5, 3.0))  # r = (1, 0.5): task a, whose loss stalled, weighs more
    assert balancer.current_weights().tolist() == pytest.approx(fourth)
    assert fourth[0] > 1 > fourth[1] and sum(fourth) == pytest.approx(2.0)
    # evaluation-mode calls leave the running sums alone
    balancer.eval()
    balancer(leaf_losses(100.0, 100.0))
    assert float(balancer.epoch_steps) == 0 and balancer.epoch_loss_sum.tolist() == [0.0, 0.0]


def famo_hand_weights(logits, losses, eps=1e-8):
    z = [math.exp(x) for x in logits]
    z = [v / sum(z) for v in z]
    inverse = [z[i] / (losses[i] + eps) for i in range(2)]
    return [v / sum(inverse) for v in inverse]


def test_famo_sgd_logit_updates_and_weights_match_the_hand_computation():
    lr, decay, eps = 0.1, 0.01, 1e-8
    balancer = FAMO(tasks=['a', 'b'], lr=lr, weight_decay=decay, optimizer='sgd')
    steps = [(1.0, 4.0), (0.5, 3.6), (0.4, 3.0)]
    logits = [0.0, 0.0]
    for k, (a, b) in enumerate(steps):
        if k > 0:  # ξ ← ξ − lr·(z ⊙ (δ − zᵀδ) + γ ξ), δ the decrease of the log losses since the last step
            previous = steps[k - 1]
            delta = [math.log(previous[0] + eps) - math.log(a + eps), math.log(previous[1] + eps) - math.log(b + eps)]
            z0 = 1 / (1 + math.exp(logits[1] - logits[0]))
            z = [z0, 1 - z0]
            mean = z[0] * delta[0] + z[1] * delta[1]
            logits = [logits[i] - lr * (z[i] * (delta[i] - mean) + decay * logits[i]) for i in range(2)]
        task_losses = leaf_losses(a, b)
        losses, log = balancer(task_losses)
        assert balancer.logits.tolist() == pytest.approx(logits, abs=1e-7)
        weights = famo_hand_weights(logits, (a, b))
        assert [log['balance.weight.a'].item(), log['balance.weight.b'].item()] == pytest.approx(weights, abs=1e-6)
        # the weights are constants of the backward pass: d(Σ w_t L_t)/dL_t = w_t = c·z_t/(L_t + ε)
        sum(losses.values()).backward()
        assert [task_losses['a'].grad.item(), task_losses['b'].grad.item()] == pytest.approx(weights, abs=1e-6)
    # step 2: task a's log loss fell by ln 2, b's by ln(4/3.6); a is down-weighted
    assert logits[0] < 0 < logits[1]
    assert famo_hand_weights([0.0, 0.0], (1.0, 4.0)) == pytest.approx([0.8, 0.2])


def test_famo_adam_first_update_moves_each_logit_by_the_learning_rate():
    balancer = FAMO(tasks=['a', 'b'])  # Adam, lr 0.025, γ 1e-3
    balancer(leaf_losses(1.0, 4.0))
    assert balancer.logits.tolist() == [0.0, 0.0]  # no previous losses: no update on the first step
    balancer(leaf_losses(0.5, 3.6))
    # Adam's first step is lr·g/(|g| + 1e-8): ±lr, the sign of the gradient z ⊙ (δ − zᵀδ) = (+0.147, −0.147)
    assert balancer.logits.tolist() == pytest.approx([-0.025, 0.025], abs=1e-6)
    assert int(balancer.adam_steps) == 1
    balancer.eval()
    before = balancer.logits.clone()
    balancer(leaf_losses(0.1, 3.6))
    assert torch.equal(balancer.logits, before) and balancer.previous_losses.tolist() == pytest.approx([0.5, 3.6])


def test_famo_and_dwa_refuse_bad_hyper_parameters():
    with pytest.raises(ValueError, match="FAMO.optimizer must be one of"):
        FAMO(tasks=['a'], optimizer='rmsprop')
    with pytest.raises(ValueError, match='DWA.temperature must be positive'):
        DWA(tasks=['a'], temperature=0.0)


def test_balancer_refuses_losses_of_other_tasks():
    balancer = FixedWeights(tasks=['a', 'b'])
    with pytest.raises(KeyError, match=r"expected exactly \['a', 'b'\]"):
        balancer(dict(a=torch.tensor(1.0)))
    with pytest.raises(KeyError, match=r"no loss entries for task\(s\) \['b'\]"):
        balancer.weigh_loss_dict({'a.loss_ce': torch.tensor(1.0), 'b.acc': torch.tensor(0.5)})


# -------------------------------------------------------------------------------------- the segmentor
def heads_losses(model, data):
    """The loss dict as the segmentor gave it before balancers: each head's losses, prefixed by its task."""
    feats = model.extract_feat(data['inputs'])
    size = tuple(data['inputs'].shape[-2:])
    losses = {}
    for task in model.tasks:
        target = model._stack_targets(task, data['data_samples'])
        for name, value in model.decode_heads[task].loss(feats[task], target, out_size=size).items():
            losses[f'{task}.{name}'] = value
    return losses


def test_no_balancer_gives_the_heads_loss_dict_and_no_state():
    model = build_tiny_segmentor()
    assert model.loss_balancer is None
    assert not any(key.startswith('loss_balancer') for key in model.state_dict())
    data = model.data_preprocessor(make_batch(), training=True)
    losses = model(**data, mode='loss')
    reference = heads_losses(model, data)
    assert list(losses) == list(reference)
    assert all(torch.equal(losses[key], reference[key]) for key in reference)


def test_fixed_weights_keeps_every_entry_bit_identical_and_the_state_dict_unchanged():
    plain = build_tiny_segmentor()
    fixed = build_tiny_segmentor(loss_balancer=dict(type='FixedWeights'))
    assert isinstance(fixed.loss_balancer, FixedWeights)
    assert list(fixed.state_dict()) == list(plain.state_dict())  # old checkpoints load strictly
    fixed.load_state_dict(plain.state_dict(), strict=True)
    data = plain.data_preprocessor(make_batch(), training=True)
    reference = plain(**copy.deepcopy(data), mode='loss')
    losses = fixed(**copy.deepcopy(data), mode='loss')
    assert all(torch.equal(losses[key], reference[key]) for key in reference)
    assert {k: v.item() for k, v in losses.items() if k not in reference} == {
        f'balance.weight.{t}': 1.0 for t in PASCAL_TASKS}


@pytest.mark.parametrize('name', sorted(BALANCER_CFGS))
def test_segmentor_logs_weights_without_loss_in_their_names_and_scales_each_entry(name):
    plain = build_tiny_segmentor()
    model = build_tiny_segmentor(loss_balancer=BALANCER_CFGS[name])
    if name == 'uncertainty':
        with torch.no_grad():
            model.loss_balancer.log_vars.copy_(torch.tensor([0.2, -0.3, 0.4, -0.5]))
    data = plain.data_preprocessor(make_batch(), training=True)
    reference = plain(**copy.deepcopy(data), mode='loss')
    losses = model(**copy.deepcopy(data), mode='loss')
    weight_keys = [f'balance.weight.{t}' for t in PASCAL_TASKS]
    assert all(key in losses and 'loss' not in key for key in weight_keys)
    assert all('loss' not in key for key in losses if key.startswith('balance.') and key != 'balance.loss_uncertainty')
    for key, value in reference.items():  # each entry keeps its key, multiplied by its task's weight
        task = key.split('.')[0]
        torch.testing.assert_close(losses[key], losses[f'balance.weight.{task}'] * value)
    if name in ('uncertainty', 'famo'):
        assert not all(losses[key].item() == pytest.approx(1.0) for key in weight_keys)
    # parse_losses sums exactly the loss entries: the logged weights are not added to the objective
    total, log_vars = model.parse_losses(losses)
    expected = sum(value for key, value in losses.items() if 'loss' in key)
    torch.testing.assert_close(total, expected)
    assert all(key in log_vars for key in weight_keys)


def test_segmentor_refuses_balancer_tasks_that_differ_from_its_own():
    with pytest.raises(ValueError, match='loss_balancer.tasks'):
        build_tiny_segmentor(loss_balancer=dict(type='DWA', tasks=['semseg']))


def train_steps(model, steps, epoch_every=None):
    optim = OptimWrapper(torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05))
    for step in range(steps):
        model.train_step(make_batch(sizes=SMALL), optim)
        if epoch_every and (step + 1) % epoch_every == 0:
            model.loss_balancer.epoch_end()


@pytest.mark.parametrize('name', ['uncertainty', 'dwa', 'famo'])
def test_checkpoint_round_trip_restores_the_balancer_state_and_the_next_weights(name):
    model = build_tiny_segmentor(loss_balancer=BALANCER_CFGS[name])
    train_steps(model, 3, epoch_every=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    balancer_keys = sorted(k for k in state if k.startswith('loss_balancer.'))
    assert balancer_keys == {
        'uncertainty': ['loss_balancer.log_vars'],
        'dwa': [f'loss_balancer.{k}' for k in sorted(('completed_epochs', 'epoch_loss_sum', 'epoch_steps',
                                                      'last_average', 'second_last_average'))],
        'famo': [f'loss_balancer.{k}' for k in sorted(('adam_steps', 'exp_avg', 'exp_avg_sq', 'has_previous',
                                                       'logits', 'previous_losses'))]}[name]
    # the state moved away from its initial value, so the round trip is not trivially satisfied
    moved = {'uncertainty': 'loss_balancer.log_vars', 'dwa': 'loss_balancer.last_average',
             'famo': 'loss_balancer.logits'}[name]
    initial = {'uncertainty': 0.0, 'dwa': 1.0, 'famo': 0.0}[name]  # log_vars 0, averages 1, logits 0 at start
    assert not torch.equal(state[moved], torch.full_like(state[moved], initial))
    restored = build_tiny_segmentor(loss_balancer=BALANCER_CFGS[name])
    restored.load_state_dict(state, strict=True)
    for key in balancer_keys:
        assert torch.equal(restored.state_dict()[key], state[key]), key
    data = model.data_preprocessor(make_batch(sizes=SMALL), training=True)
    after = model(**copy.deepcopy(data), mode='loss')
    after_restored = restored(**copy.deepcopy(data), mode='loss')
    for task in PASCAL_TASKS:
        key = f'balance.weight.{task}'
        assert torch.equal(after[key], after_restored[key]), key
    if name == 'dwa':
        assert not all(after[f'balance.weight.{t}'].item() == pytest.approx(1.0) for t in PASCAL_TASKS)


# ----------------------------------------------------------------------------------------- hook, configs
def test_hook_calls_epoch_end_and_refuses_a_model_without_balancer():
    hook = HOOKS.build(dict(type='LossBalancerHook'))
    assert isinstance(hook, LossBalancerHook)
    model = torch.nn.Module()
    model.loss_balancer = DWA(tasks=['a', 'b'])
    model.loss_balancer(leaf_losses(1.0, 2.0))
    runner = SimpleNamespace(model=model)
    hook.before_train(runner)
    hook.after_train_epoch(runner)
    assert int(model.loss_balancer.completed_epochs) == 1
    assert model.loss_balancer.last_average.tolist() == [1.0, 2.0]
    model.loss_balancer = None
    with pytest.raises(AttributeError, match='has no loss_balancer'):
        hook.before_train(runner)


@pytest.mark.parametrize('name,balancer', [('uncertainty', 'UncertaintyWeighting'), ('dwa', 'DWA')])
def test_balancer_configs_keep_the_base_hooks(name, balancer):
    cfg = Config.fromfile(str(REPO / f'configs/ditask/swin-t_pascal-mtl_{name}.py'))
    base = Config.fromfile(str(REPO / 'configs/_base_/default_runtime.py'))
    assert cfg.custom_hooks == base.custom_hooks  # the runner adds LossBalancerHook
    assert cfg.model.loss_balancer.type == balancer
    built = MODELS.build(dict(cfg.model.loss_balancer, tasks=list(cfg.tasks)))
    assert built.tasks == tuple(cfg.tasks)
    if name == 'uncertainty':  # no weight decay on the log-variances
        assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {'loss_balancer': dict(decay_mult=0.0)}


def test_an_adapter_only_checkpoint_keeps_the_balancer_state():
    """extract_adapters' state dict carries a stateful balancer's buffers, so a resumed run keeps its weights."""
    from ditask_mm.models.adapter_checkpoint import adapter_state_dict

    from ..test_segmentors.utils import build_tiny_segmentor
    model = build_tiny_segmentor(loss_balancer=dict(type='FAMO'))
    kept = adapter_state_dict(model)
    balancer = [k for k in model.state_dict() if k.startswith('loss_balancer.')]
    assert balancer and all(k in kept for k in balancer)


def test_a_full_checkpoint_without_balancer_state_loads_into_a_balanced_model_and_back(tmp_path, monkeypatch):
    """load_from / tools/test.py across balancer configs: only loss_balancer. keys may differ, with a WARNING."""
    from ditask_mm.models import checkpoint_fit
    from ditask_mm.models.checkpoint_fit import CheckpointMismatchError
    from ditask_mm.models.model_checkpoint import load_model_checkpoint
    warnings = []
    monkeypatch.setattr(checkpoint_fit, 'print_log', lambda msg, **kw: warnings.append(msg)
                        if kw.get('level') == logging.WARNING else None)
    plain = build_tiny_segmentor()
    train_steps(plain, 1)
    torch.save({'state_dict': plain.state_dict(), 'meta': {}}, tmp_path / 'plain.pth')
    dwa = build_tiny_segmentor(loss_balancer=BALANCER_CFGS['dwa'])
    initial = {k: v.clone() for k, v in dwa.loss_balancer.state_dict().items()}
    load_model_checkpoint(dwa, str(tmp_path / 'plain.pth'))
    assert len(warnings) == 1 and 'holds no state for the loss balancer (DWA' in warnings[0]
    for key, value in plain.state_dict().items():
        assert torch.equal(dwa.state_dict()[key], value), key  # every other tensor was loaded
    assert all(torch.equal(v, initial[k]) for k, v in dwa.loss_balancer.state_dict().items())

    train_steps(dwa, 2, epoch_every=1)
    torch.save({'state_dict': dwa.state_dict(), 'meta': {}}, tmp_path / 'dwa.pth')
    back = build_tiny_segmentor()
    load_model_checkpoint(back, str(tmp_path / 'dwa.pth'))
    assert len(warnings) == 2 and 'has no place for' in warnings[1] and 'loss_balancer.last_average' in warnings[1]
    assert all(torch.equal(back.state_dict()[k], v) for k, v in dwa.state_dict().items() if k in back.state_dict())

    broken = dict(plain.state_dict())
    broken.pop(next(k for k in broken if 'decode_heads.semseg' in k))
    torch.save({'state_dict': broken, 'meta': {}}, tmp_path / 'broken.pth')
    with pytest.raises(CheckpointMismatchError, match='model keys the checkpoint lacks: .*decode_heads.semseg'):
        load_model_checkpoint(build_tiny_segmentor(loss_balancer=BALANCER_CFGS['dwa']), str(tmp_path / 'broken.pth'))
