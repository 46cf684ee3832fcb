"""Gradient-level balancers: the aggregators' results, and the update that writes them into ``.grad``.

The toy models are fp64 (so the comparisons are exact to rounding); the
per-task gradients they are checked against are computed independently, one
``torch.autograd.grad`` per task on a fresh forward.
"""
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_WRAPPERS

import ditask_mm.models  # noqa: F401  (registers the balancers)
from ditask_mm.engine.gradient_ddp import WRAPPER_TYPE, GradientBalancingDDP, gradient_balancing_wrapper_cfg
from ditask_mm.models.losses.balancers import GRADIENT_BALANCERS, balanced_update, is_gradient_balancer
from ditask_mm.models.losses.balancers.gradient_step import declared_tasks, parameter_sharing, reached_parameters
from ditask_mm.registry import MODELS

from ..test_segmentors.utils import build_tiny_segmentor, make_batch


def build(name, tasks=('a', 'b'), **kwargs):
    return MODELS.build(dict(type=name, tasks=list(tasks), **kwargs))


# ----------------------------------------------------------------- combine
def test_pcgrad_projects_each_gradient_off_the_one_it_conflicts_with_and_sums():
    g1, g2 = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64), torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64)
    direction, _ = build('PCGrad').combine(torch.stack([g1, g2]))
    expected = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g2 @ g1) / (g1 @ g1) * g1)
    torch.testing.assert_close(direction, expected)


def test_mgda_gives_the_min_norm_point_of_the_segment():
    g1, g2 = torch.tensor([2.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    direction, weights = build('MGDA', epsilon=1e-9, max_iters=1000).combine(torch.stack([g1, g2]))
    alpha = ((g2 - g1) @ g2) / ((g1 - g2) @ (g1 - g2))  # argmin |α g1 + (1-α) g2|
    torch.testing.assert_close(weights, torch.stack([alpha, 1 - alpha]), atol=1e-6, rtol=0)
    torch.testing.assert_close(direction, alpha * g1 + (1 - alpha) * g2, atol=1e-6, rtol=0)


def test_cagrad_with_radius_zero_is_the_average_gradient():
    jacobian = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    direction, _ = build('CAGrad', tasks='abc', c=0.0).combine(jacobian)
    torch.testing.assert_close(direction, jacobian.mean(0), atol=1e-6, rtol=0)


def test_upgrad_never_conflicts_with_a_task_and_is_the_mean_without_conflicts():
    g = torch.Generator().manual_seed(1)
    conflicting = torch.randn(4, 6, dtype=torch.float64, generator=g)
    conflicting[1] = -conflicting[0] + 0.1 * conflicting[1]
    direction, _ = build('UPGrad', tasks='abcd').combine(conflicting)
    assert (conflicting @ direction).min() >= -1e-8
    orthogonal = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    direction, _ = build('UPGrad', tasks='abc').combine(orthogonal)
    torch.testing.assert_close(direction, orthogonal.mean(0))


def test_aligned_mtl_gives_every_orthogonal_gradient_the_smallest_norm():
    orthogonal = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    direction, _ = build('AlignedMTL', tasks='abc').combine(orthogonal)
    torch.testing.assert_close(direction, torch.full((3,), 1 / 3, dtype=torch.float64))


@pytest.mark.parametrize('name', GRADIENT_BALANCERS)
def test_a_task_without_gradient_gets_weight_zero_and_the_others_still_move(name):
    jacobian = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.2, 1.0, 0.3]], dtype=torch.float64)
    direction, weights = build(name, tasks='abc').combine(jacobian)
    assert weights[1] == 0
    assert direction.norm() > 0.1  # MGDA's min-norm point with the zero row would be 0
    single, weights = build(name, tasks='abc').combine(jacobian * torch.tensor([[1.0], [0.0], [0.0]]))
    torch.testing.assert_close(single, jacobian[0])  # one live row: that gradient itself
    assert weights.tolist() == [1.0, 0.0, 0.0]


def test_scale_multiplies_the_direction_and_a_gradient_balancer_keeps_the_losses_as_configured():
    jacobian = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    plain, _ = build('MGDA').combine(jacobian)
    scaled, _ = build('MGDA', scale=2.0).combine(jacobian)
    torch.testing.assert_close(scaled, 2 * plain)
    losses, log = build('MGDA')({'a': torch.tensor(2.0), 'b': torch.tensor(3.0)})
    assert [float(losses[t]) for t in 'ab'] == [2.0, 3.0]
    assert is_gradient_balancer(build('PCGrad')) and not is_gradient_balancer(build('DWA'))
    with pytest.raises(ValueError, match='scale must be positive'):
        build('PCGrad', scale=0.0)


# ----------------------------------------------------------------- the update
class Toy(BaseModel):
    """A shared trunk, a block shared by tasks a and b only, and one head per task; losses as a segmentor's."""

    def __init__(self, balancer: dict, tasks=('a', 'b', 'c')) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.tasks = tuple(tasks)
        self.trunk = nn.Linear(3, 4)
        self.pair = nn.Linear(4, 4)  # reached by a and b, not by c
        self.heads = nn.ModuleDict({t: nn.Linear(4, 1) for t in self.tasks})
        self.heads['b'].load_state_dict(self.heads['a'].state_dict())  # with opposite targets: a and b conflict
        self.loss_balancer = MODELS.build(dict(balancer, tasks=list(self.tasks)))
        self.double()

    def forward(self, x, y, mode='loss'):
        features = torch.tanh(self.trunk(x))
        paired = torch.tanh(self.pair(features))
        losses = {}
        for i, task in enumerate(self.tasks):
            source = paired if task in ('a', 'b') else features
            losses[f'{task}.loss_mse'] = (i + 1) * ((self.heads[task](source)[:, 0] - y[:, i])**2).mean()
        return losses

    def task_gradients(self, x, y):
        """``{task: {name: gradient}}``, one fresh forward and autograd.grad per task (the reference)."""
        params = dict((n, p) for n, p in self.named_parameters() if p.requires_grad)
        result = {}
        for task in self.tasks:
            loss = self(x, y)[f'{task}.loss_mse']
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            result[task] = {n: g for n, g in zip(params, grads) if g is not None}
        return result


def toy_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y[:, 1] = -y[:, 0] - 1  # tasks a and b conflict
    return x, y


def step(model, x, y, lr=0.1):
    optim = OptimWrapper(torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log = balanced_update(model, model(x, y), optim)
    applied = {n: (before[n] - p.detach()) / lr for n, p in model.named_parameters()}  # the gradient used
    return applied, log


def test_with_unit_weights_the_update_is_the_gradient_of_the_summed_loss():
    model = Toy(dict(type='PCGrad'))
    # every task weight 1: the update must then be the summed loss's gradient
    model.loss_balancer.gramian_weights = lambda gramian: torch.ones(gramian.shape[0], dtype=gramian.dtype)
    x, y = toy_batch()
    reference = {n: sum(g[n] for g in model.task_gradients(x, y).values() if n in g)
                 for n, _ in model.named_parameters()}
    applied, log = step(model, x, y)
    for name, grad in reference.items():
        torch.testing.assert_close(applied[name], grad, msg=lambda m, n=name: f'{n}: {m}')
    assert float(log['balance.skipped_step']) == 0.0
    assert 'loss' in log and 'a.loss_mse' in log  # parse_losses' log is kept


def test_pcgrad_combines_each_sharing_set_over_its_own_tasks_and_heads_get_their_own_gradient():
    model = Toy(dict(type='PCGrad'))
    x, y = toy_batch()
    grads = model.task_gradients(x, y)
    applied, log = step(model, x, y)
    pcgrad = model.loss_balancer
    for prefix, tasks in (('trunk.', 'abc'), ('pair.', 'ab')):
        names = [n for n, _ in model.named_parameters() if n.startswith(prefix)]
        jacobian = torch.stack([torch.cat([grads[t][n].reshape(-1) for n in names]) for t in tasks])
        expected, _ = pcgrad.combine(jacobian)  # 2-3 tasks: check PCGrad's arithmetic by hand for the pair
        if tasks == 'ab':
            g1, g2 = jacobian
            assert g1 @ g2 < 0, 'the toy targets should make a and b conflict on the pair block'
            torch.testing.assert_close(expected, (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g2 @ g1) / (g1 @ g1) * g1))
        torch.testing.assert_close(torch.cat([applied[n].reshape(-1) for n in names]), expected)
    for task in 'abc':
        for name in (f'heads.{task}.weight', f'heads.{task}.bias'):
            torch.testing.assert_close(applied[name], grads[task][name])
    assert {'balance.weight.a', 'balance.weight.c', 'balance.a+b.weight.a', 'balance.a+b.weight.b'} <= set(log)
    shares = [float(log[f'balance.share.{t}']) for t in 'abc']
    assert sum(shares) == pytest.approx(1.0)


def test_an_inf_in_one_task_gradient_skips_the_step_without_a_scaler():
    class InfGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value):
            return value.clone()

        @staticmethod
        def backward(ctx, grad):
            return torch.full_like(grad, float('inf'))

    model = Toy(dict(type='MGDA'))
    x, y = toy_batch()
    losses = model(x, y)
    losses['c.loss_mse'] = InfGrad.apply(losses['c.loss_mse'])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log = balanced_update(model, losses, optim)
    assert float(log['balance.skipped_step']) == 1.0
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
        assert param.grad is None or not param.grad.any(), f'{name}: gradients left for the next step'


def test_loss_entries_of_no_task_are_refused_with_their_names():
    model = Toy(dict(type='PCGrad'))
    x, y = toy_batch()
    losses = dict(model(x, y), **{'aux.loss_extra': torch.tensor(1.0, dtype=torch.float64, requires_grad=True)})
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(KeyError, match=r"\['aux.loss_extra'\] belong to no task"):
        balanced_update(model, losses, optim)


def test_frozen_heads_are_refused():
    model = Toy(dict(type='PCGrad'))
    model.heads.requires_grad_(False)
    x, y = toy_batch()
    with pytest.raises(RuntimeError, match='no trainable parameter belongs to one task alone'):
        balanced_update(model, model(x, y), OptimWrapper(torch.optim.SGD(model.trunk.parameters(), lr=0.1)))


# ------------------------------------------------------- on the real segmentor
def test_the_graph_walk_finds_exactly_the_parameters_autograd_reaches_in_the_segmentor():
    model = build_tiny_segmentor(loss_balancer=dict(type='PCGrad'))
    model.train()
    data = model.data_preprocessor(make_batch(), True)
    losses = model(**data, mode='loss')
    assert not any(key.startswith('balance.') for key in losses)  # the loss dict stays unweighted
    params = [p for p in model.parameters() if p.requires_grad]
    index = {id(p): i for i, p in enumerate(params)}
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    task_losses = [sum(v for k, v in losses.items() if k.startswith(f'{task}.') and 'loss' in k)
                   for task in model.tasks]
    for task, loss, found in zip(model.tasks, task_losses, reached_parameters(task_losses, index)):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        expected = {i for i, g in enumerate(grads) if g is not None}
        assert found == expected, (task, [names[i] for i in found ^ expected])
        assert any(f'decode_heads.{task}.' in names[i] for i in found)
        assert not any('decode_heads.' in names[i] and f'decode_heads.{task}.' not in names[i] for i in found)


def test_task_thetas_and_heads_belong_to_their_task_even_though_batched_spectra_connect_every_theta():
    model = build_tiny_segmentor(loss_balancer=dict(type='MGDA'))
    model.train()
    data = model.data_preprocessor(make_batch(), True)
    losses = model(**data, mode='loss')
    task_losses = {t: sum(v for k, v in losses.items() if k.startswith(f'{t}.') and 'loss' in k) for t in model.tasks}
    params, reach = parameter_sharing(model, task_losses, model.tasks)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    sharing = {name: {t for i, t in enumerate(model.tasks) if reach[i][p]} for p, name in enumerate(names)}
    index = {id(p): i for i, p in enumerate(params)}
    walked = reached_parameters([task_losses['semseg']], index)[0]
    assert any('theta_tasks.normals' in names[i] for i in walked), 'the batched spectra no longer connect the θ'
    task_thetas = [n for n in names if 'theta_tasks.' in n]
    assert task_thetas
    for name in task_thetas:
        assert sharing[name] == {name.rsplit('.', 1)[1]}, (name, sharing[name])
    for name in names:
        if name.startswith('decode_heads.'):
            assert sharing[name] == {name.split('.')[1]}, name
        if 'theta_shared' in name:
            assert sharing[name] == set(model.tasks), name
    assert declared_tasks('backbone.x.lora_tasks_A.semseg+sal', model.tasks) == {'semseg', 'sal'}
    assert declared_tasks('backbone.x.lora_tasks_A.unknown', model.tasks) is None


def test_segmentor_train_step_gives_each_task_theta_its_own_task_gradient():
    model = build_tiny_segmentor(loss_balancer=dict(type='MGDA'))
    model.train()
    named = {n: p for n, p in model.named_parameters() if 'theta_tasks.' in n}
    reference = {}
    for task in model.tasks:
        data = model.data_preprocessor(make_batch(), True)
        loss = sum(v for k, v in model(**data, mode='loss').items() if k.startswith(f'{task}.') and 'loss' in k)
        mine = [n for n in named if n.endswith(f'.{task}')]
        reference.update(zip(mine, torch.autograd.grad(loss, [named[n] for n in mine])))
    before = {n: p.detach().clone() for n, p in named.items()}
    lr = 0.1
    model.train_step(make_batch(), OptimWrapper(torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                                                lr=lr)))
    for name, param in named.items():
        torch.testing.assert_close((before[name] - param.detach()) / lr, reference[name], atol=1e-5, rtol=1e-4,
                                   msg=lambda m, n=name: f'{n}: {m}')
    assert any(reference[n].abs().max() > 1e-6 for n in named), 'the task θ got no gradient at all'


def test_segmentor_train_step_updates_the_shared_theta_with_the_combined_gradient():
    model = build_tiny_segmentor(loss_balancer=dict(type='MGDA'))
    model.train()
    optim = OptimWrapper(torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    log = model.train_step(make_batch(), optim)
    weights = [float(log[f'balance.weight.{t}']) for t in model.tasks]
    assert sum(weights) == pytest.approx(1.0, abs=1e-6) and min(weights) >= 0  # MGDA: a convex combination
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any('theta_shared' in n or 'shared' in n for n in moved), moved[:5]
    assert any(n.startswith('decode_heads.semseg.') for n in moved)


# ------------------------------------------------------------- the DDP wrapper
def test_the_ddp_wrapper_config_is_chosen_for_gradient_balancers_only():
    pcgrad, dwa = Toy(dict(type='PCGrad')), Toy(dict(type='DWA'))
    assert gradient_balancing_wrapper_cfg(dwa, None) is None
    assert gradient_balancing_wrapper_cfg(pcgrad, None) == dict(
        type=WRAPPER_TYPE, broadcast_buffers=False, find_unused_parameters=False)
    kept = gradient_balancing_wrapper_cfg(pcgrad, dict(type='MMDistributedDataParallel', find_unused_parameters=True))
    assert kept == dict(type=WRAPPER_TYPE, find_unused_parameters=True)
    assert MMENGINE_WRAPPERS.get(WRAPPER_TYPE) is GradientBalancingDDP  # what Runner.wrap_model looks up
    with pytest.raises(ValueError, match="type=GradientBalancingDDP.*'MMFullyShardedDataParallel'"):
        gradient_balancing_wrapper_cfg(pcgrad, dict(type='MMFullyShardedDataParallel'))
