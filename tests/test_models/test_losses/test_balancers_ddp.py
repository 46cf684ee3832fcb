"""Two gloo ranks, each with half of a fixed global batch, train exactly as one process on the whole batch.

A small linear model (no BatchNorm: its batch statistics would differ between
a half batch and the whole one) with one head per task, task losses that are
means over samples (so the DDP mean of the half-batch gradients is the
full-batch gradient), plain SGD, all in fp64 (so that summation order does
not matter at the 1e-6 tolerance). After the steps, the parameters and the
balancer state of both ranks are identical and equal the single-process run's.
"""
import os
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

import ditask_mm.models  # noqa: F401  (registers the balancers)
from ditask_mm.engine.buffer_sync import broadcast_buffers
from ditask_mm.models.losses.balancers import LossBalancerHook
from ditask_mm.registry import MODELS

from ...dist_utils import spawn_two_gloo_ranks

TASKS = ('a', 'b')
GLOBAL_BATCH, STEPS, EPOCH_STEPS = 8, 6, 2
BALANCERS = dict(fixed=dict(type='FixedWeights'),
                 uncertainty=dict(type='UncertaintyWeighting', regression_tasks=['b']),
                 dwa=dict(type='DWA'),
                 famo_adam=dict(type='FAMO'),
                 famo_sgd=dict(type='FAMO', optimizer='sgd', lr=0.5))


class ToyMultiTask(nn.Module):
    """A shared linear layer and tanh, one linear head per task; task ``i``'s loss is a scaled MSE."""

    def __init__(self, balancer: dict) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(3, 4)
        self.heads = nn.ModuleDict({task: nn.Linear(4, 1) for task in TASKS})
        self.loss_balancer = MODELS.build(dict(balancer, tasks=list(TASKS)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        features = torch.tanh(self.trunk(x))
        task_losses = {task: (i * 4 + 1) * ((self.heads[task](features)[:, 0] - y[:, i])**2).mean()
                       for i, task in enumerate(TASKS)}
        losses, _ = self.loss_balancer(task_losses)
        return sum(losses.values())


def global_batch(step: int):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(GLOBAL_BATCH, 3, generator=g, dtype=torch.float64)
    return x, torch.randn(GLOBAL_BATCH, 2, generator=g, dtype=torch.float64) * (step + 1)


def train(name: str, rank: int = 0, world_size: int = 1) -> dict:
    """``STEPS`` SGD steps on this rank's share of each global batch; the model's state dict afterwards."""
    model = ToyMultiTask(BALANCERS[name]).double()
    with warnings.catch_warnings():  # torch's deprecation notice; broadcast_buffers=False is still the way
        warnings.simplefilter('ignore', FutureWarning)  # to test that the states agree without any broadcast
        wrapped = DistributedDataParallel(model, broadcast_buffers=False) if world_size > 1 else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    hook, runner = LossBalancerHook(), SimpleNamespace(model=wrapped)  # the hook unwraps the DDP model
    hook.before_train(runner)
    share = GLOBAL_BATCH // world_size
    for step in range(STEPS):
        x, y = global_batch(step)
        x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
        optimizer.zero_grad()
        wrapped(x, y).backward()
        optimizer.step()
        if step % EPOCH_STEPS == 0:  # mid-epoch, as BroadcastBuffersHook before an iteration-based validation
            broadcast_buffers(model)  # rank 0's buffers everywhere: harmless only if they already agree
        if (step + 1) % EPOCH_STEPS == 0:
            hook.after_train_epoch(runner)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _two_rank_training(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    states = {name: train(name, rank, world_size=2) for name in BALANCERS}
    torch.save(states, os.path.join(out_dir, f'rank{rank}.pt'))


def test_two_gloo_ranks_with_half_batches_match_one_process_on_the_global_batch(tmp_path):
    spawn_two_gloo_ranks(_two_rank_training, tmp_path)
    ranks = [torch.load(tmp_path / f'rank{rank}.pt') for rank in (0, 1)]
    for name in BALANCERS:
        reference = train(name)
        for key, value in reference.items():
            assert torch.equal(ranks[0][name][key], ranks[1][name][key]), f'{name}: {key} differs between ranks'
            torch.testing.assert_close(ranks[0][name][key].double(), value.double(), atol=1e-6, rtol=0,
                                       msg=lambda m, n=name, k=key: f'{n}: {k} differs from one process: {m}')
    # the balancers did act, so matching states are not trivially the initial ones
    reference = {name: train(name) for name in ('uncertainty', 'dwa', 'famo_adam', 'famo_sgd')}
    assert reference['uncertainty']['loss_balancer.log_vars'].abs().min() > 1e-3
    assert int(reference['dwa']['loss_balancer.completed_epochs']) == STEPS // EPOCH_STEPS
    dwa = ToyMultiTask(BALANCERS['dwa']).loss_balancer
    dwa.load_state_dict({k.split('.', 1)[1]: v for k, v in reference['dwa'].items() if k.startswith('loss_balancer.')})
    assert (dwa.current_weights() - 1).abs().min() > 1e-3
    for name in ('famo_adam', 'famo_sgd'):
        assert reference[name]['loss_balancer.logits'].abs().min() > 1e-3
    fixed = {k: v for k, v in reference['uncertainty'].items() if not k.startswith('loss_balancer.')}
    assert any(not torch.equal(v, train('fixed')[k]) for k, v in fixed.items()), 'the balancer changed nothing'


@pytest.mark.parametrize('name', ['dwa', 'famo_adam'])
def test_without_the_cross_rank_reduction_the_ranks_would_diverge(name, monkeypatch):
    """The control: the same two shards trained separately (no all-reduce) give different balancer states."""
    halves = []
    for rank in (0, 1):
        monkeypatch.setattr('ditask_mm.models.losses.balancers.base.distributed_world_size', lambda: 1)
        model = ToyMultiTask(BALANCERS[name]).double()
        for step in range(STEPS):
            x, y = global_batch(step)
            x, y = x[rank * 4:(rank + 1) * 4], y[rank * 4:(rank + 1) * 4]
            model(x, y)
            if (step + 1) % EPOCH_STEPS == 0:
                model.loss_balancer.epoch_end()
        halves.append(model.loss_balancer.state_dict())
    key = 'last_average' if name == 'dwa' else 'logits'
    assert not torch.allclose(halves[0][key], halves[1][key], atol=1e-6)
