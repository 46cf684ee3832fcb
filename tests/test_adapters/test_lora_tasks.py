"""LoRALinear with per-task (or per task-group) pairs: paths, gradients, merging, state-dict keys."""
import pytest
import torch
import torch.nn as nn
from torch.func import functional_call

import ditask_mm  # noqa: F401
from ditask_mm.adapters import LoRALinear, adapter_task, merge_adapters

GROUPS = ['semseg+human_parts', 'sal']


def randomized(layer: LoRALinear) -> LoRALinear:
    """Give every B (zero at init) random values so that each path differs from the frozen layer."""
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if name.startswith(('lora_B', 'lora_tasks_B.')):
                param.normal_()
    return layer


def test_shared_path_is_the_old_formula_whatever_the_tasks():
    torch.manual_seed(0)
    lin = nn.Linear(12, 10)
    layer = randomized(LoRALinear(lin, rank=3, alpha=6, tasks=GROUPS, dropout=0.0))
    x = torch.randn(2, 5, 12)
    old_formula = lin(x) + 2.0 * x @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(layer(x), old_formula)
    # a task the layer has no pair for falls back to the shared path
    torch.testing.assert_close(layer(x, task='normals'), old_formula)


def test_shared_path_dropout_feeds_only_the_low_rank_branch_as_before():
    torch.manual_seed(1)
    lin = nn.Linear(8, 6)
    layer = randomized(LoRALinear(lin, rank=2, scale=4.0, dropout=0.3, tasks=['sal']))
    x = torch.randn(7, 8)
    torch.manual_seed(5)
    out = layer(x)
    torch.manual_seed(5)
    dropped = layer.lora_dropout(x)
    assert not torch.equal(dropped, x)
    torch.testing.assert_close(out, lin(x) + 4.0 * dropped @ layer.lora_A.T @ layer.lora_B.T)


def test_task_path_replaces_the_shared_pair_by_its_own():
    torch.manual_seed(2)
    lin = nn.Linear(9, 4)
    layer = randomized(LoRALinear(lin, rank=2, scale=0.5, tasks=GROUPS))
    x = torch.randn(3, 9)
    for key in GROUPS:
        A, B = layer.lora_tasks_A[key], layer.lora_tasks_B[key]
        assert A.shape == (2, 9) and B.shape == (4, 2)
        hand = x @ lin.weight.T + lin.bias + 0.5 * (x @ A.T) @ B.T
        torch.testing.assert_close(layer(x, task=key), hand)
    # the groups' pairs are separate parameters with separate values
    assert not torch.equal(layer(x, task=GROUPS[0]), layer(x, task=GROUPS[1]))
    with adapter_task(layer, 'sal'):
        torch.testing.assert_close(layer(x), layer(x, task='sal'))


def test_zero_b_at_init_makes_every_path_the_frozen_layer():
    torch.manual_seed(3)
    lin = nn.Linear(6, 5)
    layer = LoRALinear(lin, rank=4, tasks=GROUPS)
    x = torch.randn(4, 6)
    for path in [None, *GROUPS]:
        torch.testing.assert_close(layer(x, task=path), lin(x))
    # the task pairs get the shared pair's initialisation: kaiming-uniform A (a=√5 bound 1/√in), zero B
    bound = 1 / 6 ** 0.5
    for key in GROUPS:
        assert torch.count_nonzero(layer.lora_tasks_B[key]) == 0
        A = layer.lora_tasks_A[key]
        assert A.abs().max() <= bound and A.std() > 0.2 * bound
        assert not torch.equal(A, layer.lora_A)


@pytest.mark.parametrize('path', [None, 'semseg+human_parts', 'sal'])
def test_gradients_reach_only_the_pair_of_the_path(path):
    torch.manual_seed(4)
    layer = randomized(LoRALinear(nn.Linear(5, 7), rank=2, tasks=GROUPS).double())
    layer(torch.randn(6, 5, dtype=torch.float64), task=path).square().sum().backward()
    own = ('lora_A', 'lora_B') if path is None else (f'lora_tasks_A.{path}', f'lora_tasks_B.{path}')
    assert layer.weight.grad is None and layer.bias.grad is None
    for name, param in layer.adapter_parameters():
        if name in own:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_task_path_gradient_matches_finite_differences_in_fp64():
    torch.manual_seed(5)
    layer = randomized(LoRALinear(nn.Linear(4, 3), rank=2, scale=2.0, tasks=['sal']).double())
    x = torch.randn(5, 4, dtype=torch.float64)
    A, B = layer.lora_tasks_A['sal'], layer.lora_tasks_B['sal']

    def task_output(a, b):
        return functional_call(layer, {'lora_tasks_A.sal': a, 'lora_tasks_B.sal': b}, (x, ), {'task': 'sal'})

    assert torch.autograd.gradcheck(task_output, (A.detach().clone().requires_grad_(),
                                                  B.detach().clone().requires_grad_()))
    layer(x, task='sal').sum().backward()
    # with dL/dy = 1 (5 × 3): dL/dB = s · 1ᵀ·(x·Aᵀ) and dL/dA = s · (1·B)ᵀ·x
    ones = torch.ones(5, 3, dtype=torch.float64)
    torch.testing.assert_close(B.grad, 2.0 * ones.T @ (x @ A.T).detach())
    torch.testing.assert_close(A.grad, 2.0 * (ones @ B).detach().T @ x)


def test_shared_false_has_no_shared_pair_and_needs_a_task():
    torch.manual_seed(6)
    lin = nn.Linear(8, 8)
    layer = randomized(LoRALinear(lin, rank=2, tasks=['sal'], shared=False))
    assert layer.lora_A is None and layer.lora_B is None
    assert sorted(layer.state_dict()) == ['bias', 'lora_tasks_A.sal', 'lora_tasks_B.sal', 'weight']
    x = torch.randn(2, 8)
    torch.testing.assert_close(layer(x), lin(x))
    torch.testing.assert_close(layer.adapted_weight(), lin.weight)
    assert not torch.allclose(layer(x, task='sal'), lin(x))
    assert 'shared=False' in repr(layer)
    with pytest.raises(ValueError, match='shared=False needs at least one task'):
        LoRALinear(nn.Linear(4, 4), shared=False)
    with pytest.raises(ValueError, match='rank must be >= 1'):
        LoRALinear(nn.Linear(4, 4), rank=0, tasks=['sal'])


def test_merge_of_every_path_equals_its_forward_in_eval():
    torch.manual_seed(7)
    layer = randomized(LoRALinear(nn.Linear(10, 6), rank=3, scale=4.0, dropout=0.2, tasks=GROUPS)).eval()
    x = torch.randn(5, 10)
    for path in [None, *GROUPS]:
        torch.testing.assert_close(layer.merge(path)(x), layer(x, task=path), atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match="no adaptation for task 'normals'"):
        layer.merge('normals')
    with pytest.raises(KeyError, match="no adaptation for task 'semseg'"):
        layer.adapted_weight('semseg')  # a group's key, not its member tasks


def test_merge_adapters_keeps_every_group_weight():
    torch.manual_seed(8)
    model = nn.Sequential(randomized(LoRALinear(nn.Linear(6, 6), rank=2, tasks=GROUPS, shared=False))).eval()
    x = torch.randn(3, 6)
    expected = {path: model[0](x, task=path) for path in [None, *GROUPS]}
    merge_adapters(model)
    for path, value in expected.items():
        torch.testing.assert_close(model[0](x, task=path), value, atol=1e-5, rtol=0)


def test_state_dict_keys_and_old_checkpoints_load():
    layer = LoRALinear(nn.Linear(4, 3), rank=2, tasks=GROUPS)
    assert sorted(layer.state_dict()) == ['bias', 'lora_A', 'lora_B', 'lora_tasks_A.sal',
                                          'lora_tasks_A.semseg+human_parts', 'lora_tasks_B.sal',
                                          'lora_tasks_B.semseg+human_parts', 'weight']
    assert [n for n, _ in layer.adapter_parameters()] == [
        'lora_A', 'lora_B', 'lora_tasks_A.semseg+human_parts', 'lora_tasks_A.sal',
        'lora_tasks_B.semseg+human_parts', 'lora_tasks_B.sal']
    assert "tasks=['semseg+human_parts', 'sal'], rank=2, scale=1" in repr(layer)
    old = LoRALinear(nn.Linear(4, 3), rank=2)
    assert sorted(old.state_dict()) == ['bias', 'lora_A', 'lora_B', 'weight']
    fresh = LoRALinear(nn.Linear(4, 3), rank=2)
    fresh.load_state_dict(old.state_dict(), strict=True)
    torch.testing.assert_close(fresh.lora_A, old.lora_A)
