"""LoRALinear and MTLoRALinear (baselines)."""
import torch
import torch.nn as nn

import ditask_mm  # noqa: F401
from ditask_mm.adapters import LoRALinear, MTLoRALinear


def test_lora_starts_as_identity_and_follows_its_formula():
    torch.manual_seed(0)
    lin = nn.Linear(12, 20)
    layer = LoRALinear(lin, rank=4, alpha=8, dropout=0.0)
    x = torch.randn(3, 12)
    torch.testing.assert_close(layer(x), lin(x))
    assert layer.scale == 2.0
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = lin(x) + 2.0 * x @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.merge()(x), expected, atol=1e-5, rtol=0)
    assert LoRALinear(nn.Linear(4, 4), rank=2, scale=4.0).scale == 4.0


def test_lora_gradients_reach_only_the_low_rank_factors():
    torch.manual_seed(1)
    layer = LoRALinear(nn.Linear(8, 8), rank=2)
    with torch.no_grad():
        layer.lora_B.normal_()
    layer(torch.randn(5, 8)).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    assert layer.lora_A.grad.abs().sum() > 0 and layer.lora_B.grad.abs().sum() > 0
    assert sorted(n for n, _ in layer.adapter_parameters()) == ['lora_A', 'lora_B']
    # tasks used to raise; each task now gets its own pair (tests/test_adapters/test_lora_tasks.py)
    with_task = LoRALinear(nn.Linear(4, 4), tasks=['a'])
    assert sorted(n for n, _ in with_task.adapter_parameters()) == ['lora_A', 'lora_B', 'lora_tasks_A.a',
                                                                    'lora_tasks_B.a']


def test_mtlora_shared_and_task_paths_follow_the_public_code():
    torch.manual_seed(2)
    lin = nn.Linear(10, 6)
    layer = MTLoRALinear(lin, rank=3, tasks=['a', 'b'], task_rank={'a': 2, 'b': 1}, dropout=0.0)
    x_shared, x_task = torch.randn(4, 10), torch.randn(4, 10)
    torch.testing.assert_close(layer(x_shared), lin(x_shared))  # B = 0 at init
    with torch.no_grad():
        for p in (layer.lora_shared_B, layer.lora_tasks_B['a'], layer.lora_tasks_B['b']):
            p.normal_()
    shared = lin(x_shared) + 4.0 * x_shared @ layer.lora_shared_A.T @ layer.lora_shared_B.T
    torch.testing.assert_close(layer(x_shared), shared)
    # task path: frozen W reads the shared input, the task update reads the task stream,
    # and the shared update is not included
    task_a = lin(x_shared) + 4.0 * x_task @ layer.lora_tasks_A['a'].T @ layer.lora_tasks_B['a'].T
    torch.testing.assert_close(layer(x_task, task='a', shared_input=x_shared), task_a)
    torch.testing.assert_close(layer.merge('b')(x_task), layer(x_task, task='b'), atol=1e-5, rtol=0)
    assert layer.lora_tasks_A['b'].shape == (1, 10)


def test_mtlora_parameter_count_matches_the_public_formula():
    # Swin-T stage-1 last block fc1 (96 -> 384): shared r=64 plus 4 tasks of rank 4
    layer = MTLoRALinear(nn.Linear(96, 384), rank=64, tasks=['s', 'p', 'n', 'l'], task_rank=4)
    count = sum(p.numel() for _, p in layer.adapter_parameters())
    assert count == 64 * (96 + 384) + 4 * 4 * (96 + 384)
    no_shared = MTLoRALinear(nn.Linear(96, 384), rank=0, tasks=['s'])
    assert no_shared.lora_shared_A is None
    assert sum(p.numel() for _, p in no_shared.adapter_parameters()) == 4 * (96 + 384)
