"""Structural invariants of CPAB1D: monotonicity, boundaries, identity, inverse,
extreme parameters, batching/broadcasting, dtype policy and input validation."""
import pytest
import torch

from ditask_mm.cpab import CPAB1D

DTYPES = [torch.float32, torch.float64]


def _theta(module, batch, scale, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(batch, module.theta_dim, generator=gen, dtype=torch.float64)).to(dtype)


def _fine_grid(zb, dtype, n=2001):
    return torch.linspace(0, 1, n, dtype=dtype) if zb else torch.linspace(-0.25, 1.25, n, dtype=dtype)


@pytest.mark.parametrize('nc', [2, 5, 16, 64])
@pytest.mark.parametrize('zb', [True, False])
def test_monotone_on_fine_grid(nc, zb):
    module = CPAB1D(nc, zb)
    theta = _theta(module, 8, 3.0, seed=nc)
    phi32 = module.transform_points(_fine_grid(zb, torch.float32), theta.float())
    assert torch.all(phi32.diff(dim=1) >= 0), 'float32 phi must be non-decreasing'
    phi64 = module.transform_points(_fine_grid(zb, torch.float64), theta)
    assert torch.all(phi64.diff(dim=1) > 0), 'float64 phi must be strictly increasing'


@pytest.mark.parametrize('nc', [1, 2, 3, 7, 16, 49, 64])
@pytest.mark.parametrize('dtype', DTYPES)
def test_zero_boundary_endpoints_exact(nc, dtype):
    module = CPAB1D(nc, True)
    theta = _theta(module, 16, 3.0, seed=nc, dtype=dtype)
    x = torch.tensor([0.0, 1.0, -0.5, 1.5, 0.3, 0.7], dtype=dtype)
    phi = module.transform_points(x, theta)
    assert torch.all(phi[:, 0] == 0) and torch.all(phi[:, 1] == 1)
    assert torch.all(phi[:, 2] < 0) and torch.all(phi[:, 3] > 1)  # outside stays outside
    assert torch.all((phi[:, 4:] > 0) & (phi[:, 4:] < 1))
    signal = torch.linspace(3, -1, 11, dtype=dtype)
    out = module.transform_sequence(signal, theta, 17)
    assert torch.all(out[:, 0] == 3) and torch.all(out[:, -1] == -1)
    assert torch.all(out.diff(dim=1) < 0)  # a decreasing signal stays decreasing


@pytest.mark.parametrize('zb', [True, False])
@pytest.mark.parametrize('dtype', DTYPES)
def test_zero_theta_is_exact_identity(zb, dtype):
    module = CPAB1D(6, zb)
    x = torch.cat([torch.linspace(-0.5, 1.5, 97, dtype=dtype), torch.rand(50, dtype=torch.float64).to(dtype)])
    assert torch.equal(module.transform_points(x, module.identity().to(dtype)), x)
    assert torch.equal(module.transform_points(x, module.identity(3).to(dtype)), x.expand(3, -1))
    for k in (1, 2, 3, 17, 96, 101):
        s = torch.randn(4, k, dtype=torch.float64).to(dtype)
        assert torch.equal(module.transform_sequence(s, module.identity(4).to(dtype)), s)
        assert torch.equal(module.transform_sequence(s[0], module.identity().to(dtype), k), s[0])


@pytest.mark.parametrize('nc', [2, 5, 16, 64])
@pytest.mark.parametrize('zb', [True, False])
def test_negative_theta_inverts(nc, zb):
    module = CPAB1D(nc, zb)
    x64 = torch.linspace(0, 1, 401, dtype=torch.float64)
    theta = _theta(module, 16, 1.0, seed=100 + nc)
    back = module.transform_points(module.transform_points(x64, theta), -theta)
    assert (back - x64).abs().max() < 1e-12
    x32, theta32 = x64.float(), theta.float()
    back32 = module.transform_points(module.transform_points(x32, theta32), -theta32)
    assert (back32 - x32).abs().max() < 5e-6
    # larger deformations still invert in float64
    theta = _theta(module, 16, 2.0, seed=200 + nc)
    back = module.transform_points(module.transform_points(x64, theta), -theta)
    assert (back - x64).abs().max() < 1e-12


def test_time_argument():
    module = CPAB1D(8, False)
    theta = _theta(module, 4, 1.5, seed=7)
    x = torch.linspace(-0.2, 1.2, 301, dtype=torch.float64)
    phi = module.transform_points(x, theta)
    half = module.transform_points(module.transform_points(x, theta, time=0.5), theta, time=0.5)
    torch.testing.assert_close(half, phi, rtol=0, atol=1e-12)  # flow property
    torch.testing.assert_close(module.transform_points(x, theta, time=-1.0),
                               module.transform_points(x, -theta), rtol=0, atol=1e-12)
    assert torch.equal(module.transform_points(x, theta, time=0.0), x.expand(4, -1))
    torch.testing.assert_close(module.transform_points(x, theta, time=2.0),
                               module.transform_points(x, 2 * theta), rtol=0, atol=1e-12)


@pytest.mark.parametrize('nc', [2, 4, 16, 64])
@pytest.mark.parametrize('zb', [True, False])
@pytest.mark.parametrize('dtype', DTYPES)
def test_large_theta_finite_and_monotone(nc, zb, dtype):
    module = CPAB1D(nc, zb)
    gen = torch.Generator().manual_seed(nc)
    sign = 20 * torch.sign(torch.randn(8, module.theta_dim, generator=gen))
    uniform = 40 * torch.rand(8, module.theta_dim, generator=gen) - 20
    theta = torch.cat([sign, uniform]).to(dtype).requires_grad_(True)
    x = torch.linspace(0, 1, 501, dtype=dtype)
    phi = module.transform_points(x, theta)
    assert torch.isfinite(phi).all()
    # points collapse onto attractors below float resolution: strictness is
    # impossible there, but the order must never be reversed
    assert torch.all(phi.diff(dim=1) >= 0)
    if zb:
        assert torch.all((phi >= 0) & (phi <= 1))
    phi.sum().backward()
    assert torch.isfinite(theta.grad).all()
    theta.grad = None
    out = module.transform_sequence(torch.linspace(1, 0, 50, dtype=dtype), theta, 70)
    (out * torch.linspace(-1, 1, 70, dtype=dtype)).sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(theta.grad).all()


@pytest.mark.parametrize('dtype', DTYPES)
def test_batch_independence(dtype):
    # A = B theta is reduced row by row in a fixed order (no batched BLAS), and
    # everything else is elementwise, so batched results are bit-identical.
    module = CPAB1D(16, True)
    theta = _theta(module, 6, 2.0, seed=11, dtype=dtype)
    x = torch.rand(6, 40, dtype=torch.float64).to(dtype)
    s = torch.randn(6, 30, dtype=torch.float64).to(dtype)
    shared = module.transform_points(x[0], theta)
    per_row = module.transform_points(x, theta)
    seq = module.transform_sequence(s, theta, 25)
    values = module.transform_values(x * 5, theta, 5.0)
    for i in range(6):
        assert torch.equal(shared[i], module.transform_points(x[0], theta[i]))
        assert torch.equal(per_row[i], module.transform_points(x[i], theta[i]))
        assert torch.equal(seq[i], module.transform_sequence(s[i], theta[i], 25))
        assert torch.equal(values[i], module.transform_values(x[i] * 5, theta[i], 5.0))


def test_broadcasting_shapes():
    module = CPAB1D(5, False)
    b, n, k, m = 3, 7, 9, 4
    theta1, theta_b = _theta(module, 1, 1.0, 0)[0], _theta(module, b, 1.0, 1)
    x1, x_b = torch.rand(n, dtype=torch.float64), torch.rand(b, n, dtype=torch.float64)
    tp = module.transform_points
    assert tp(x1, theta1).shape == (n,)
    assert tp(x1, theta_b).shape == (b, n)
    assert tp(x_b, theta1).shape == (b, n)
    assert tp(x_b, theta_b).shape == (b, n)
    assert tp(x1[None], theta_b).shape == (b, n)
    assert tp(x1, theta1[None]).shape == (1, n)
    torch.testing.assert_close(tp(x_b, theta1), torch.stack([tp(r, theta1) for r in x_b]))
    s1, s_b = torch.randn(k, dtype=torch.float64), torch.randn(b, k, dtype=torch.float64)
    ts = module.transform_sequence
    assert ts(s1, theta1).shape == (k,) and ts(s1, theta1, m).shape == (m,)
    assert ts(s1, theta_b, m).shape == (b, m)
    assert ts(s_b, theta1, m).shape == (b, m)
    assert ts(s_b, theta_b, m).shape == (b, m)
    torch.testing.assert_close(ts(s1, theta_b, m), torch.stack([ts(s1, t, m) for t in theta_b]))
    torch.testing.assert_close(ts(s_b, theta1, m), torch.stack([ts(r, theta1, m) for r in s_b]))
    tv = module.transform_values
    vmax_b = torch.tensor([[2.0], [3.0], [4.0]], dtype=torch.float64)
    assert tv(x1 * 2, theta1, 2.0).shape == (n,)
    assert tv(x1 * 2, theta_b, 2.0).shape == (b, n)
    assert tv(x_b, theta_b, vmax_b).shape == (b, n)
    assert tv(x1, theta_b, vmax_b).shape == (b, n)
    assert tv(x1, theta1, torch.tensor(2.0, dtype=torch.float64)).shape == (n,)
    torch.testing.assert_close(tv(x_b, theta_b, vmax_b), vmax_b * tp(x_b / vmax_b, theta_b))
    torch.testing.assert_close(tv(x1, theta_b, vmax_b), vmax_b * tp(x1 / vmax_b, theta_b))


def test_input_validation():
    module = CPAB1D(4, True)
    x, theta = torch.rand(5), torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r'last dimension 3.*got shape \(2, 4\)'):
        module.transform_points(x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match='batch size'):
        module.transform_points(torch.rand(3, 5), theta)
    with pytest.raises(ValueError, match='batch size'):
        module.transform_sequence(torch.rand(3, 5), theta)
    with pytest.raises(TypeError, match='floating'):
        module.transform_points(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match='floating'):
        module.transform_points(torch.arange(5), theta)
    with pytest.raises(TypeError, match='floating'):
        module.transform_sequence(torch.arange(5), theta)
    with pytest.raises(ValueError, match='1-D or 2-D'):
        module.transform_points(torch.rand(2, 2, 5), theta)
    with pytest.raises(ValueError, match='out_len'):
        module.transform_sequence(x, theta, 0)
    with pytest.raises(ValueError, match='vmax'):
        module.transform_values(x, theta, 0.0)
    with pytest.raises(ValueError, match='time'):
        module.transform_points(x, theta, time=float('nan'))


@pytest.mark.parametrize('low', [torch.float16, torch.bfloat16])
def test_low_precision_inputs_run_in_float32(low):
    module = CPAB1D(8, True)
    theta = _theta(module, 3, 1.0, 5).to(low)
    x = torch.rand(3, 20).to(low)
    phi = module.transform_points(x, theta)
    assert phi.dtype == torch.float32
    assert torch.equal(phi, module.transform_points(x.float(), theta.float()))
    s = torch.randn(3, 12).to(low)
    out = module.transform_sequence(s, theta, 9)
    assert out.dtype == torch.float32
    assert torch.equal(out, module.transform_sequence(s.float(), theta.float(), 9))
    values = module.transform_values(x * 4, theta, torch.tensor(4.0, dtype=low))
    assert values.dtype == torch.float32


def _autocast_devices():
    devices = ['cpu']
    if torch.cuda.is_available():
        devices.append('cuda')
    return devices


@pytest.mark.parametrize('device', _autocast_devices())
def test_autocast_is_disabled_inside(device):
    module = CPAB1D(8, False).to(device)
    theta = _theta(module, 3, 1.0, 6, dtype=torch.float32).to(device).requires_grad_(True)
    x = torch.rand(3, 20, device=device)
    s = torch.randn(3, 12, device=device)
    ref_phi = module.transform_points(x, theta)
    ref_seq = module.transform_sequence(s, theta, 9)
    low = torch.bfloat16 if device == 'cpu' else torch.float16
    with torch.autocast(device_type=device, dtype=low):
        phi = module.transform_points(x, theta)
        seq = module.transform_sequence(s, theta, 9)
    assert phi.dtype == torch.float32 and seq.dtype == torch.float32
    assert torch.equal(phi, ref_phi) and torch.equal(seq, ref_seq)
    (phi.sum() + seq.sum()).backward()
    assert theta.grad.dtype == torch.float32 and torch.isfinite(theta.grad).all()


def test_float64_uses_exact_basis_and_double_moves_it():
    module = CPAB1D(7, False)
    theta = _theta(module, 2, 1.0, 9)
    x = torch.linspace(0, 1, 33, dtype=torch.float64)
    phi_float_module = module.transform_points(x, theta)
    module.double()
    assert module.basis.dtype == torch.float64
    assert torch.equal(module.transform_points(x, theta), phi_float_module)
    assert module.identity().dtype == torch.float64
    # the compute dtype comes from the inputs; the basis is cast to it
    phi32 = module.transform_points(x.float(), theta.float())
    assert phi32.dtype == torch.float32
    assert torch.equal(phi32, CPAB1D(7, False).transform_points(x.float(), theta.float()))


def test_half_module_still_uses_exact_basis():
    module = CPAB1D(7, True).half()
    assert module.basis.dtype == torch.float16
    theta = _theta(module, 2, 1.0, 12)
    x = torch.linspace(0, 1, 33, dtype=torch.float64)
    reference = CPAB1D(7, True)
    for dtype in (torch.float32, torch.float64):
        assert torch.equal(module.transform_points(x.to(dtype), theta.to(dtype)),
                           reference.transform_points(x.to(dtype), theta.to(dtype)))


def test_resampling_follows_difw_convention():
    from ditask_mm.cpab.interpolation import resample_at_grid
    y = torch.tensor([[3.0, 1.0, 4.0, 1.5, 9.0]], dtype=torch.float64)
    grid = torch.tensor([[-2.0, -0.1, 0.0, 0.1, 0.5, 0.8, 1.0, 1.3, float('inf')]], dtype=torch.float64)
    grid.requires_grad_(True)
    out = resample_at_grid(y, grid)
    # p = g (W-1); i0 = clamp(floor p), i1 = clamp(floor p + 1), out = y0 + (y1 - y0)(p - i0)
    expected = torch.tensor([[3.0, 3.0, 3.0, 3.0 - 2 * 0.4, 4.0, 1.5 + 7.5 * 0.2, 9.0, 9.0, 9.0]],
                            dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)
    (grad,) = torch.autograd.grad(out.sum(), grid)
    # constant outside, right-sided slope at nodes (p = 0, p = 2), zero at p = W - 1
    assert torch.equal(grad, torch.tensor([[0.0, 0.0, -8.0, -8.0, -10.0, 30.0, 0.0, 0.0, 0.0]],
                                          dtype=torch.float64))
