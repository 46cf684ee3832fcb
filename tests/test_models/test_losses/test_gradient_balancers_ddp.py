"""Gradient-level balancers under DDP: two gloo ranks with half batches train exactly as one process.

Each rank wraps a small fp64 multi-task model in
:class:`~ditask_mm.engine.GradientBalancingDDP` and trains it on its half of
fixed global batches; the reference is one process on the whole batches,
updated by :func:`~ditask_mm.models.losses.balancers.balanced_update` through
the model's own ``train_step``. The task losses are means over samples, so
the mean of the half-batch Jacobians is the whole-batch Jacobian, and every
method (PCGrad, MGDA, CAGrad, Aligned-MTL, UPGrad) then combines the same rows.
Three tasks with conflicting targets make the methods differ from the summed
loss, and PCGrad's random task order matter: each rank seeds its generator
differently, and the weights broadcast from rank 0 make rank 1 follow rank 0's
draws, which are the reference's.

The control: with every cross-rank reduction of the balancer switched off,
each rank trains on its own shard only (DDP's own all-reduce stays off under
``no_sync``), and the ranks end up with different parameters.
"""
import os
import warnings
from typing import Dict, List, Optional, Tuple
from unittest import mock

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper

import ditask_mm.models  # noqa: F401  (registers the balancers)
from ditask_mm.engine.gradient_ddp import GradientBalancingDDP
from ditask_mm.models.losses.balancers import GRADIENT_BALANCERS, balanced_update
from ditask_mm.registry import MODELS

from ...dist_utils import spawn_two_gloo_ranks

TASKS = ('a', 'b', 'c')
METHODS = ('PCGrad', 'MGDA', 'CAGrad', 'AlignedMTL', 'UPGrad')
GLOBAL_BATCH, STEPS, LR = 8, 4, 0.1
TRAINING_SEED = 1234
#: The module attributes through which the balancer reaches torch.distributed (the control switches them off).
WORLD_SIZE_LOOKUPS = ('ditask_mm.models.losses.balancers.gradient_step.distributed_world_size',
                      'ditask_mm.models.losses.balancers.gradient.distributed_world_size',
                      'ditask_mm.models.losses.balancers.base.distributed_world_size')


class ToyGradientMultiTask(BaseModel):
    """A shared ``Linear + tanh`` trunk and one linear head per task, for the gradient-level balancers.

    Task ``t``'s loss ``'{t}.loss_mse'`` is the mean over the samples of the
    squared error between its head's output and column ``t`` of ``y``. The
    input ``x`` has shape ``(N, 3)``, the targets ``y`` shape ``(N, len(TASKS))``.

    Args:
        balancer: A registered balancer type (built with the tasks), or
            ``None`` for the plain summed-loss step of mmengine's ``BaseModel``.
        loss_factor: Multiplies every task loss (small values give small
            gradients).
    """

    def __init__(self, balancer: Optional[str], loss_factor: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(3, 5)
        self.heads = nn.ModuleDict({task: nn.Linear(5, 1) for task in TASKS})
        self.loss_factor = loss_factor
        self.loss_balancer = MODELS.build(dict(type=balancer, tasks=list(TASKS))) if balancer else None

    def task_outputs(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Each head's output, shape ``(N,)``."""
        features = torch.tanh(self.trunk(x))
        return {task: self.heads[task](features)[:, 0] for task in TASKS}

    def forward(self, x: torch.Tensor, y: torch.Tensor, mode: str = 'loss') -> Dict[str, torch.Tensor]:
        outputs = self.task_outputs(x)
        y = y.to(self.trunk.weight.dtype)
        return {f'{task}.loss_mse': self.loss_factor * ((outputs[task] - y[:, i])**2).mean()
                for i, task in enumerate(TASKS)}

    def train_step(self, data, optim_wrapper) -> Dict[str, torch.Tensor]:
        """As ``MultiTaskSegmentor.train_step``: the balancer's update instead of ``update_params``."""
        if self.loss_balancer is None:
            return super().train_step(data, optim_wrapper)
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
            losses = self._run_forward(data, mode='loss')
        return balanced_update(self, losses, optim_wrapper)


def global_batch(step: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(GLOBAL_BATCH, 3)`` and targets ``(GLOBAL_BATCH, 3)`` in fp64; task c's target opposes task a's."""
    g = torch.Generator().manual_seed(200 + step)
    x = torch.randn(GLOBAL_BATCH, 3, generator=g, dtype=torch.float64)
    signal = 2 * x[:, 0] + x[:, 1]
    y = torch.stack([signal, 0.5 * torch.randn(GLOBAL_BATCH, generator=g, dtype=torch.float64), -3 * signal], dim=1)
    return x, y


def shard(step: int, rank: int, world_size: int) -> Dict[str, torch.Tensor]:
    """This rank's contiguous share of global batch ``step``, as the model's ``train_step`` data."""
    x, y = global_batch(step)
    size = GLOBAL_BATCH // world_size
    return dict(x=x[rank * size:(rank + 1) * size], y=y[rank * size:(rank + 1) * size])


def train(method: Optional[str], rank: int = 0, world_size: int = 1, ddp: bool = False,
          seed: int = TRAINING_SEED) -> Tuple[Dict[str, torch.Tensor], List[Dict[str, torch.Tensor]]]:
    """``STEPS`` SGD steps on this rank's shards; the state dict and the logged ``balance.weight.*`` of each step.

    Args:
        method: A gradient-level balancer, or ``None`` for the summed loss.
        rank: Which shard of each global batch to train on.
        world_size: Into how many shards each global batch is cut.
        ddp: Wrap the model in ``GradientBalancingDDP`` (needs an initialised
            process group).
        seed: Of the global generator while training (PCGrad's task order).
    """
    model = ToyGradientMultiTask(method).double()
    if ddp:
        with warnings.catch_warnings():  # torch's deprecation notice of broadcast_buffers=False
            warnings.simplefilter('ignore', FutureWarning)
            runner_model = GradientBalancingDDP(module=model, device_ids=None, broadcast_buffers=False)
    else:
        runner_model = model
    optim_wrapper = OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=LR))
    torch.manual_seed(seed)  # PCGrad draws its task order from the global generator
    weights = []
    for step in range(STEPS):
        log_vars = runner_model.train_step(shard(step, rank, world_size), optim_wrapper)
        weights.append({key: value.detach().clone() for key, value in log_vars.items()
                        if key.startswith('balance.weight.')})
    return {key: value.detach().clone() for key, value in model.state_dict().items()}, weights


def _two_rank_training(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    seed = TRAINING_SEED + rank  # different task orders on the ranks: only rank 0's weights may count
    results = {method: train(method, rank, world_size=2, ddp=True, seed=seed) for method in METHODS}
    with mock.patch(WORLD_SIZE_LOOKUPS[0], lambda: 1), mock.patch(WORLD_SIZE_LOOKUPS[1], lambda: 1), \
            mock.patch(WORLD_SIZE_LOOKUPS[2], lambda: 1):
        results['unreduced'] = train('UPGrad', rank, world_size=2, ddp=True, seed=seed)
    torch.save(results, os.path.join(out_dir, f'rank{rank}.pt'))


def test_gradient_balancers_on_two_gloo_ranks_match_one_process_on_the_global_batch(tmp_path):
    assert set(METHODS) == set(GRADIENT_BALANCERS), 'a gradient-level balancer is missing from this test'
    spawn_two_gloo_ranks(_two_rank_training, tmp_path)
    ranks = [torch.load(tmp_path / f'rank{rank}.pt') for rank in (0, 1)]
    summed_state, _ = train(None)
    for method in METHODS:
        reference_state, reference_weights = train(method)
        for key, value in reference_state.items():
            assert torch.equal(ranks[0][method][0][key], ranks[1][method][0][key]), \
                f'{method}: {key} differs between the ranks'
            torch.testing.assert_close(ranks[0][method][0][key], value, atol=1e-6, rtol=0,
                                       msg=lambda m, n=method, k=key: f'{n}: {k} differs from one process: {m}')
        for step, expected in enumerate(reference_weights):
            assert sorted(expected) == [f'balance.weight.{task}' for task in TASKS], f'{method}: {sorted(expected)}'
            for key, value in expected.items():
                assert torch.equal(ranks[0][method][1][step][key], ranks[1][method][1][step][key]), \
                    f'{method}, step {step}: {key} differs between the ranks'
                torch.testing.assert_close(ranks[0][method][1][step][key], value, atol=1e-6, rtol=0,
                                           msg=lambda m, n=method, k=key, s=step: f'{n}, step {s}, {k}: {m}')
        # the method acted: the shared trunk ends elsewhere than with the summed loss
        assert not torch.allclose(reference_state['trunk.weight'], summed_state['trunk.weight'], atol=1e-4), \
            f'{method} trained the trunk exactly as the summed loss does; the test would pass trivially'
    # PCGrad only departs from the sum (all weights 1) when the task gradients conflict: they must here
    pcgrad_state, pcgrad_weights = train('PCGrad')
    pcgrad_weights = torch.stack([torch.stack(list(w.values())) for w in pcgrad_weights])
    assert (pcgrad_weights - 1).abs().max() > 1e-3, 'no conflicting task gradients: PCGrad equals the sum'
    # ... and its task order matters, so rank 1's own draws would have shown without the broadcast
    other_order_state, _ = train('PCGrad', seed=TRAINING_SEED + 1)
    assert not torch.allclose(other_order_state['trunk.weight'], pcgrad_state['trunk.weight'], atol=1e-5)

    # the control: without the balancer's reductions each rank follows its own shard, and the ranks differ
    unreduced = [ranks[rank]['unreduced'][0] for rank in (0, 1)]
    assert not torch.allclose(unreduced[0]['trunk.weight'], unreduced[1]['trunk.weight'], atol=1e-4)
    for rank in (0, 1):  # ... exactly as one process trained on that shard alone
        own_shard, _ = train('UPGrad', rank, world_size=2)
        for key, value in own_shard.items():
            torch.testing.assert_close(unreduced[rank][key], value, atol=1e-6, rtol=0,
                                       msg=lambda m, r=rank, k=key: f'rank {r} without reduction, {k}: {m}')
