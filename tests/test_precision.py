"""The shared precision helpers (ditask_mm.precision) and their use in CPAB."""
import contextlib

import pytest
import torch

from ditask_mm.cpab import CPAB1D
from ditask_mm.precision import LOW_PRECISION, autocast_disabled, compute_dtype


def _matmul_dtype() -> torch.dtype:
    """The dtype a CPU fp32 matmul produces under the current autocast state."""
    a = torch.randn(4, 4)
    return (a @ a).dtype


@pytest.mark.parametrize('device', ['cpu', torch.device('cpu'), torch.zeros(1).device])
def test_autocast_is_off_inside_and_restored_after(device):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.is_autocast_enabled('cpu') and _matmul_dtype() == torch.bfloat16
        with autocast_disabled(device):
            assert not torch.is_autocast_enabled('cpu')
            assert _matmul_dtype() == torch.float32
        assert torch.is_autocast_enabled('cpu')
        assert _matmul_dtype() == torch.bfloat16
    assert not torch.is_autocast_enabled('cpu') and _matmul_dtype() == torch.float32


def test_nested_contexts_restore_each_level_and_survive_exceptions():
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with autocast_disabled('cpu'):
            with autocast_disabled('cpu'):
                assert _matmul_dtype() == torch.float32
            assert _matmul_dtype() == torch.float32
            with torch.autocast('cpu', dtype=torch.bfloat16):  # re-enabled by an inner caller
                assert _matmul_dtype() == torch.bfloat16
            assert _matmul_dtype() == torch.float32
        with pytest.raises(RuntimeError, match='boom'):
            with autocast_disabled('cpu'):
                raise RuntimeError('boom')
        assert torch.is_autocast_enabled('cpu') and _matmul_dtype() == torch.bfloat16


def test_device_type_without_autocast_gives_a_no_op():
    context = autocast_disabled(torch.device('meta'))
    assert isinstance(context, contextlib.nullcontext)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with autocast_disabled('meta'):
            # the CPU autocast state is untouched by a context for another device type
            assert torch.is_autocast_enabled('cpu') and _matmul_dtype() == torch.bfloat16


def test_compute_dtype_upcasts_only_low_precision():
    assert set(LOW_PRECISION) == {torch.float16, torch.bfloat16}
    assert compute_dtype(torch.float16) == torch.float32
    assert compute_dtype(torch.bfloat16) == torch.float32
    assert compute_dtype(torch.float32) == torch.float32
    assert compute_dtype(torch.float64) == torch.float64


def test_cpab_under_cpu_bf16_autocast_matches_fp32_outside():
    generator = torch.Generator().manual_seed(0)
    module = CPAB1D(16, True)
    theta = torch.randn(3, module.theta_dim, generator=generator)
    x = torch.rand(3, 25, generator=generator)
    signals = torch.randn(3, 12, generator=generator)
    values = torch.rand(3, 10, generator=generator) * 5
    outside = (module.transform_points(x, theta), module.transform_sequence(signals, theta, 9),
               module.transform_values(values, theta, 5.0))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        inside = (module.transform_points(x, theta), module.transform_sequence(signals, theta, 9),
                  module.transform_values(values, theta, 5.0))
        assert torch.is_autocast_enabled('cpu')  # the operator leaves the caller's autocast on
    for name, ref, out in zip(('transform_points', 'transform_sequence', 'transform_values'), outside, inside):
        assert out.dtype == torch.float32, name
        assert torch.equal(out, ref), name
