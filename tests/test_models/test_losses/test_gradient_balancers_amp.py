"""Gradient-level balancers with mmengine's ``AmpOptimWrapper``, non-finite gradients, accumulation, checkpoints.

``AmpOptimWrapper`` asserts a GPU; the fixture :func:`cpu_amp` lets it build
on the CPU with a real ``torch.amp.GradScaler('cpu')``, so mmengine's own
``backward`` / ``step`` / ``update`` code runs unchanged. The models are fp32
and, except in the autocast test, run their forward outside autocast, so the
AMP step and the plain ``OptimWrapper`` step compute the same losses and
differ only in the loss scale.
"""
import functools
from typing import Dict, Optional

import pytest
import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from ditask_mm.models.losses.balancers import GRADIENT_BALANCERS, PCGrad, balanced_update
from ditask_mm.registry import MODELS

from ..test_segmentors.utils import PASCAL_TASKS, build_tiny_segmentor
from .test_gradient_balancers_ddp import TASKS, ToyGradientMultiTask, shard

INIT_SCALE = 2.0**10
LR = 0.1
AMP_MODULE = 'mmengine.optim.optimizer.amp_optimizer_wrapper'


@pytest.fixture
def cpu_amp(monkeypatch):
    """Let ``AmpOptimWrapper`` build without a GPU, its ``GradScaler`` a real CPU one."""
    monkeypatch.setattr(f'{AMP_MODULE}.is_cuda_available', lambda: True)
    monkeypatch.setattr(f'{AMP_MODULE}.GradScaler', functools.partial(torch.amp.GradScaler, 'cpu'))


class InfGradient(torch.autograd.Function):
    """Identity forward; an all-inf gradient backward, as an fp16 overflow in one task's backward pass."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, float('inf'))


class PoisonableToy(ToyGradientMultiTask):
    """The toy model, whose task ``poisoned_task`` can get an inf gradient.

    ``poison_at='shared'``: only that task's gradient of the shared trunk is
    inf (its head's gradient stays finite); ``'loss'``: its whole gradient.
    """

    def __init__(self, balancer: Optional[str], loss_factor: float = 1.0, poison_at: str = 'shared') -> None:
        super().__init__(balancer, loss_factor)
        self.poisoned_task: Optional[str] = None
        self.poison_at = poison_at

    def task_outputs(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        features = torch.tanh(self.trunk(x))
        outputs = {}
        for task in TASKS:
            task_features = features
            if task == self.poisoned_task and self.poison_at == 'shared':
                task_features = InfGradient.apply(features)
            outputs[task] = self.heads[task](task_features)[:, 0]
        return outputs

    def forward(self, x: torch.Tensor, y: torch.Tensor, mode: str = 'loss') -> Dict[str, torch.Tensor]:
        losses = super().forward(x, y, mode)
        if self.poisoned_task is not None and self.poison_at == 'loss':
            key = f'{self.poisoned_task}.loss_mse'
            losses[key] = InfGradient.apply(losses[key])
        return losses


def batch(step: int = 0, part: int = 0, parts: int = 1) -> Dict[str, torch.Tensor]:
    """Part ``part`` of ``parts`` of the DDP test's global batch ``step``, in fp32."""
    return {key: value.float() for key, value in shard(step, part, parts).items()}


def wrapper(kind: str, model: torch.nn.Module, accumulative_counts: int = 1) -> OptimWrapper:
    """A plain ``OptimWrapper`` or an ``AmpOptimWrapper`` (dynamic scale from ``INIT_SCALE``) with SGD."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    if kind == 'plain':
        return OptimWrapper(optimizer=optimizer, accumulative_counts=accumulative_counts)
    return AmpOptimWrapper(optimizer=optimizer, loss_scale=dict(init_scale=INIT_SCALE),
                           accumulative_counts=accumulative_counts)


def snapshot(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Copies of the model's parameters, by name."""
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def fp32_step(model: torch.nn.Module, optim_wrapper: OptimWrapper, data: Dict[str, torch.Tensor],
              seed: int = 0) -> Dict[str, torch.Tensor]:
    """One ``balanced_update`` on the fp32 losses of ``data`` (forward outside autocast); its log."""
    torch.manual_seed(seed)
    return balanced_update(model, model(**data), optim_wrapper)


def assert_same_parameters(actual: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor], what: str) -> None:
    """Every parameter of ``expected`` equals ``actual``'s to 1e-6 (``what`` names the comparison)."""
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, atol=1e-6, rtol=0,
                                   msg=lambda m, n=name: f'{what}: {n}: {m}')


def shared_jacobian(model: ToyGradientMultiTask, data: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The task gradients of the trunk, shape ``(tasks, trunk parameters)``, by plain autograd."""
    losses = model(**data)
    trunk = list(model.trunk.parameters())
    rows = [torch.autograd.grad(losses[f'{task}.loss_mse'], trunk, retain_graph=True) for task in TASKS]
    return torch.stack([torch.cat([g.reshape(-1) for g in row]) for row in rows])


# ------------------------------------------------------------------------------------------- finite gradients
@pytest.mark.parametrize('method', GRADIENT_BALANCERS)
def test_amp_step_applies_the_update_of_the_fp32_step(method, cpu_amp):
    """The scaled per-task gradients are unscaled before they are combined, and the scaler applies the result."""
    updated = {}
    for kind in ('plain', 'amp'):
        model = ToyGradientMultiTask(method)
        optim_wrapper = wrapper(kind, model)
        before = snapshot(model)
        log = fp32_step(model, optim_wrapper, batch())
        updated[kind] = snapshot(model)
        assert float(log['balance.skipped_step']) == 0.0
        assert (updated[kind]['trunk.weight'] - before['trunk.weight']).abs().max() > 1e-4, f'{kind}: no update'
        if kind == 'amp':
            assert float(optim_wrapper.loss_scaler.get_scale()) == INIT_SCALE  # a finite step keeps the scale
    assert_same_parameters(updated['amp'], updated['plain'], f'{method}, AmpOptimWrapper vs OptimWrapper')


def test_small_gradients_still_move_the_shared_parameters_and_amp_matches_fp32(cpu_amp):
    """CAGrad's threshold is absolute in torchjd; the balancer normalises the Gramian, so scale does not matter.

    torchjd's CAGrad gives zero weights when the trace of the Gramian it is
    given is below ``norm_eps = 1e-4``. ``combine`` divides the Gramian by its
    mean diagonal first (the weights are scale-invariant), so with small
    gradients the weights are those of the same gradients scaled up, the trunk
    moves, and the AMP step (loss-scaled rows, unscaled before combining)
    equals the fp32 one.
    """
    small = dict(loss_factor=1e-4)
    probe = ToyGradientMultiTask('CAGrad', **small)
    jacobian = shared_jacobian(probe, batch())
    assert float(jacobian.pow(2).sum()) < 1e-4, 'the toy gradients are not small enough to test the threshold'
    weights = probe.loss_balancer.combine(jacobian)[1]
    assert weights.abs().max() > 0.1
    torch.testing.assert_close(weights, probe.loss_balancer.combine(jacobian * INIT_SCALE)[1])
    gramian = (jacobian @ jacobian.T).double()
    assert not probe.loss_balancer.gramian_weights(gramian).any(), 'torchjd no longer zeroes small Gramians'

    updated, logs = {}, {}
    for kind in ('plain', 'amp'):
        model = ToyGradientMultiTask('CAGrad', **small)
        before = snapshot(model)
        logs[kind] = fp32_step(model, wrapper(kind, model), batch())
        updated[kind] = snapshot(model)
        assert not torch.equal(updated[kind]['trunk.weight'], before['trunk.weight']), f'{kind}: the trunk is still'
    assert_same_parameters(updated['amp'], updated['plain'], 'CAGrad with small gradients, AMP vs fp32')
    for task in TASKS:
        amp, plain = (float(logs[kind][f'balance.weight.{task}']) for kind in ('amp', 'plain'))
        assert amp == pytest.approx(plain)


def test_bf16_autocast_train_step_matches_the_plain_step_on_the_same_forward(cpu_amp):
    """Through ``train_step`` (the forward in ``optim_context``, bf16 on the CPU) versus the same bf16 forward."""
    amp_model, plain_model = ToyGradientMultiTask('UPGrad'), ToyGradientMultiTask('UPGrad')
    amp_wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(amp_model.parameters(), lr=LR),
                                  loss_scale=dict(init_scale=INIT_SCALE), dtype='bfloat16')
    plain_wrapper = wrapper('plain', plain_model)
    before = snapshot(amp_model)
    amp_log = amp_model.train_step(batch(), amp_wrapper)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = plain_model(**batch())
    plain_log = balanced_update(plain_model, losses, plain_wrapper)
    torch.testing.assert_close(amp_log['loss'], plain_log['loss'], atol=0, rtol=0)
    fp32_loss = sum(ToyGradientMultiTask('UPGrad')(**batch()).values())
    assert float(amp_log['loss'].detach()) != float(fp32_loss.detach()), 'the forward did not run under bf16 autocast'
    assert (snapshot(amp_model)['trunk.weight'] - before['trunk.weight']).abs().max() > 1e-4
    assert_same_parameters(snapshot(amp_model), snapshot(plain_model), 'bf16 autocast, AMP vs plain')


# --------------------------------------------------------------------------------------- non-finite gradients
def all_gradients_cleared(model: torch.nn.Module) -> bool:
    """Whether every ``.grad`` is ``None`` or zero."""
    return all(param.grad is None or not param.grad.any() for param in model.parameters())


@pytest.mark.parametrize('poison_at', ['shared', 'loss'])
def test_amp_inf_in_one_task_gradient_skips_the_step_and_backs_off_the_scale(poison_at, cpu_amp):
    model = PoisonableToy('UPGrad', poison_at=poison_at)
    optim_wrapper = wrapper('amp', model)
    before = snapshot(model)
    model.poisoned_task = 'b'
    log = fp32_step(model, optim_wrapper, batch(0))
    assert float(log['balance.skipped_step']) == 1.0
    assert all(torch.equal(value, before[name]) for name, value in snapshot(model).items()), 'a parameter moved'
    assert float(optim_wrapper.loss_scaler.get_scale()) == INIT_SCALE / 2  # GradScaler's backoff_factor 0.5
    assert all_gradients_cleared(model)

    model.poisoned_task = None  # the next finite step updates, from the lowered scale
    log = fp32_step(model, optim_wrapper, batch(1))
    assert float(log['balance.skipped_step']) == 0.0
    after = snapshot(model)
    for name in ('trunk.weight', 'heads.a.weight', 'heads.b.weight'):
        assert (after[name] - before[name]).abs().max() > 1e-4, f'{name} did not move after the skipped step'
    assert float(optim_wrapper.loss_scaler.get_scale()) == INIT_SCALE / 2
    # and it is the update a fresh fp32 model makes from the same parameters on the same batch
    reference = PoisonableToy('UPGrad')
    fp32_step(reference, wrapper('plain', reference), batch(1))
    assert_same_parameters(after, snapshot(reference), 'the step after the skipped one')


@pytest.mark.parametrize('poison_at', ['shared', 'loss'])
def test_inf_without_a_loss_scaler_skips_the_step_and_drops_the_gradients(poison_at):
    model = PoisonableToy('UPGrad', poison_at=poison_at)
    optim_wrapper = wrapper('plain', model)
    before = snapshot(model)
    model.poisoned_task = 'b'
    log = fp32_step(model, optim_wrapper, batch(0))
    assert float(log['balance.skipped_step']) == 1.0
    assert all(torch.equal(value, before[name]) for name, value in snapshot(model).items()), 'a parameter moved'
    assert all_gradients_cleared(model)

    model.poisoned_task = None
    log = fp32_step(model, optim_wrapper, batch(1))
    assert float(log['balance.skipped_step']) == 0.0
    reference = PoisonableToy('UPGrad')
    fp32_step(reference, wrapper('plain', reference), batch(1))
    assert_same_parameters(snapshot(model), snapshot(reference), 'the step after the skipped one')


# -------------------------------------------------------------------------------------- gradient accumulation
@pytest.mark.parametrize('kind', ['plain', 'amp'])
def test_accumulated_micro_steps_update_once_with_the_mean_of_their_updates(kind, cpu_amp):
    """``accumulative_counts=2``: no step after the first micro-step; then SGD's mean of the two single steps.

    UPGrad's direction is positively homogeneous in the Jacobian, so the
    accumulated ``d(J₁/2) + d(J₂/2)`` is the mean of the single-step
    directions; plain SGD makes the update the mean of the single updates.
    """
    micro_batches = [batch(0, part, 2) for part in (0, 1)]
    single_steps = []
    for data in micro_batches:
        model = ToyGradientMultiTask('UPGrad')
        fp32_step(model, wrapper('plain', model), data)
        single_steps.append(snapshot(model))
    expected = {name: (single_steps[0][name] + single_steps[1][name]) / 2 for name in single_steps[0]}

    model = ToyGradientMultiTask('UPGrad')
    optim_wrapper = wrapper(kind, model, accumulative_counts=2)
    before = snapshot(model)
    fp32_step(model, optim_wrapper, micro_batches[0])
    assert all(torch.equal(value, before[name]) for name, value in snapshot(model).items()), 'stepped too early'
    assert all(param.grad is not None and param.grad.abs().max() > 0 for param in model.parameters()), \
        'the first micro-step left no gradient to accumulate'
    fp32_step(model, optim_wrapper, micro_batches[1])
    assert_same_parameters(snapshot(model), expected, f'{kind}: two accumulated micro-steps')
    assert all_gradients_cleared(model)


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize('method', GRADIENT_BALANCERS)
def test_gradient_balancers_hold_no_checkpoint_state(method):
    balancer = MODELS.build(dict(type=method, tasks=list(PASCAL_TASKS)))
    assert balancer.state_dict() == {}, f'{method} has state; the checkpoint story of docs and loaders changes'


def test_checkpoint_without_balancer_loads_strictly_into_a_pcgrad_segmentor_and_the_model_file_round_trips(
        tmp_path):
    plain = build_tiny_segmentor()
    with torch.no_grad():  # weights unlike the fresh PCGrad segmentor's, so the load is visible
        for param in plain.parameters():
            param.add_(0.01)
    torch.save(plain.state_dict(), tmp_path / 'plain.pth')
    balanced = build_tiny_segmentor(loss_balancer=dict(type='PCGrad'))
    assert isinstance(balanced.loss_balancer, PCGrad)
    assert not [key for key in balanced.state_dict() if key.startswith('loss_balancer.')]
    assert set(balanced.state_dict()) == set(plain.state_dict())  # so either checkpoint loads into either model
    result = balanced.load_state_dict(torch.load(tmp_path / 'plain.pth'), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in plain.state_dict().items():
        assert torch.equal(balanced.state_dict()[key], value), f'{key} was not loaded'

    torch.save(balanced, tmp_path / 'model.pth')
    restored = torch.load(tmp_path / 'model.pth', weights_only=False)
    assert isinstance(restored.loss_balancer, PCGrad) and restored.loss_balancer.tasks == balanced.loss_balancer.tasks
    inputs = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    balanced.eval()
    restored.eval()
    with torch.no_grad():
        expected, actual = balanced.encode_decode(inputs), restored.encode_decode(inputs)
    assert sorted(actual) == sorted(expected) == sorted(PASCAL_TASKS)
    for task, output in expected.items():
        assert torch.equal(actual[task], output), f'{task}: the restored model predicts differently'
    jacobian = torch.randn(len(PASCAL_TASKS), 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    jacobian[1] = -jacobian[0]  # a conflict, so PCGrad projects
    torch.manual_seed(5)
    direction, _ = balanced.loss_balancer.combine(jacobian)
    torch.manual_seed(5)
    assert torch.equal(restored.loss_balancer.combine(jacobian)[0], direction)
