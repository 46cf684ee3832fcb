"""ByteMaskDropout: the dropout distribution of F.dropout with a one-byte saved mask."""
import pytest
import torch
import torch.nn as nn

from ditask_mm.adapters import DiTASKLinear, LoRALinear, MTLoRALinear
from ditask_mm.adapters.dropout import ByteMaskDropout, byte_mask_dropout


def test_drop_rate_scale_and_gradient():
    torch.manual_seed(0)
    p = 0.05
    x = torch.rand(400, 1000, dtype=torch.float64) + 1.0  # no zeros: a zero output means dropped
    x.requires_grad_(True)
    y = byte_mask_dropout(x, p)
    dropped = y == 0
    rate = dropped.double().mean().item()
    # 400k Bernoulli(0.05) draws: standard error 3.4e-4
    assert abs(rate - p) < 2e-3
    torch.testing.assert_close(y[~dropped], x.detach()[~dropped] / (1 - p))
    grad = torch.randn_like(x)
    y.backward(grad)
    torch.testing.assert_close(x.grad, torch.where(dropped, 0.0, grad / (1 - p)))


def test_masks_follow_the_default_generator_and_differ_per_call():
    x = torch.ones(64, 64)
    torch.manual_seed(3)
    first, second = byte_mask_dropout(x, 0.3), byte_mask_dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(byte_mask_dropout(x, 0.3), first)
    assert not torch.equal(first, second)


def test_saves_a_bool_mask_not_a_float_copy():
    x = torch.randn(32, 32, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        byte_mask_dropout(x, 0.2)
    assert [t.dtype for t in saved] == [torch.bool]


def test_eval_zero_p_and_bad_p():
    x = torch.randn(5, 7)
    layer = ByteMaskDropout(0.5).eval()
    assert layer(x) is x
    assert byte_mask_dropout(x, 0.0) is x
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match='dropout probability must be in'):
            ByteMaskDropout(bad)


def test_adapters_use_it():
    base = nn.Linear(8, 8)
    assert isinstance(DiTASKLinear(base, tessellation_size=4, main_path_dropout=0.05).dropout, ByteMaskDropout)
    assert isinstance(LoRALinear(nn.Linear(8, 8), rank=2, dropout=0.1).lora_dropout, ByteMaskDropout)
    assert isinstance(MTLoRALinear(nn.Linear(8, 8), rank=2, dropout=0.1).lora_dropout, ByteMaskDropout)
