"""Gradients of CPAB1D: gradcheck in float64, closed-form special cases, float32."""
import math

import pytest
import torch
from torch.autograd import gradcheck

from ditask_mm.cpab import CPAB1D, rref_basis

CONFIGS = [(1, False), (2, True), (2, False), (3, True), (5, True), (5, False), (8, True), (8, False)]


def _theta(module, batch, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, module.theta_dim, generator=gen, dtype=torch.float64)


def _points(shape, seed, low=0.0, high=1.0):
    gen = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize('nc,zb', CONFIGS)
def test_gradcheck_transform_points(nc, zb):
    module = CPAB1D(nc, zb)
    theta = _theta(module, 2, 1.5, seed=nc).requires_grad_(True)
    x = _points((2, 9), seed=nc, low=-0.2 if not zb else 0.0, high=1.2 if not zb else 1.0)
    x.requires_grad_(True)
    assert gradcheck(lambda t, p: module.transform_points(p, t), (theta, x))
    shared = _points(7, seed=nc + 1).requires_grad_(True)
    assert gradcheck(lambda t, p: module.transform_points(p, t, time=0.7), (theta, shared))


@pytest.mark.parametrize('nc,zb', CONFIGS)
def test_gradcheck_transform_sequence(nc, zb):
    module = CPAB1D(nc, zb)
    theta = _theta(module, 2, 1.5, seed=10 + nc).requires_grad_(True)
    signal = torch.randn(2, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(nc))
    signal.requires_grad_(True)
    assert gradcheck(lambda t, s: module.transform_sequence(s, t, 8), (theta, signal))
    assert gradcheck(lambda t: module.transform_sequence(signal[0].detach(), t, 13), (theta,))


@pytest.mark.parametrize('nc,zb', CONFIGS)
def test_gradcheck_transform_values(nc, zb):
    module = CPAB1D(nc, zb)
    theta = _theta(module, 2, 1.5, seed=20 + nc).requires_grad_(True)
    vmax = torch.tensor([[3.0], [5.0]], dtype=torch.float64, requires_grad=True)
    v = (_points((2, 6), seed=nc) * 3).requires_grad_(True)
    assert gradcheck(lambda t, val, m: module.transform_values(val, t, m), (theta, v, vmax))
    assert gradcheck(lambda t: module.transform_values(v.detach()[0], t, 3.0), (theta,))


@pytest.mark.parametrize('nc,zb', [(4, True), (4, False), (16, True)])
def test_gradient_at_zero_is_basis_velocity(nc, zb):
    # d phi(x) / d theta_k at theta = 0 is the k-th basis field v_k(x)
    module = CPAB1D(nc, zb)
    x = torch.linspace(0, 1, 23, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(
        lambda t: module.transform_points(x, t), torch.zeros(module.theta_dim, dtype=torch.float64))
    basis = rref_basis(nc, zb)
    cell = torch.clamp(torch.floor(x * nc), 0, nc - 1).long()
    expected = basis[2 * cell] * x[:, None] + basis[2 * cell + 1]
    torch.testing.assert_close(jac, expected, rtol=0, atol=1e-15)


def test_zero_slope_cell_exact_gradient():
    # docs/method.md §3.6: nc=2, no zero boundary, theta=[0.5, 1, 0.3] gives a_0 = 0 and
    # b_0 = 0.25 exactly. x = 0.1 stays in cell 0 (phi = 0.35); the exact
    # d phi / d theta_0 = t (a_k x + b_k) + a_k t^2 b / 2 = 0.4 - 0.125 = 0.275
    # (difw's a ~ 0 branch drops the second term and reports 0.400).
    module = CPAB1D(2, False)
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 1e-6)):
        theta = torch.tensor([0.5, 1.0, 0.3], dtype=dtype, requires_grad=True)
        phi = module.transform_points(torch.tensor([0.1], dtype=dtype), theta)
        assert abs(phi.item() - 0.35) < tol
        phi.sum().backward()
        assert abs(theta.grad[0].item() - 0.275) < tol
        assert abs(theta.grad[1].item() - 0.1125) < tol and theta.grad[2].item() == 0
    # and it agrees with central finite differences
    theta = torch.tensor([0.5, 1.0, 0.3], dtype=torch.float64)
    x = torch.tensor([0.1], dtype=torch.float64)
    h = 1e-6
    fd = (module.transform_points(x, theta + torch.tensor([h, 0, 0], dtype=torch.float64))
          - module.transform_points(x, theta - torch.tensor([h, 0, 0], dtype=torch.float64))) / (2 * h)
    assert abs(fd.item() - 0.275) < 1e-8


@pytest.mark.parametrize('slope', [0.0, 1e-12, 1e-7, 1e-4, 3e-3, 5e-2, 0.2])
def test_gradcheck_near_zero_slopes(slope):
    # Cell 0 of nc=2 (no zb) has a_0 = -theta_0 + theta_1 / 2; sweep it through the
    # series/direct switch of E and L, for points that stay and points that cross.
    module = CPAB1D(2, False)
    theta = torch.tensor([[0.5, 1.0 + 2 * slope, 0.3], [0.5, 1.0 - 2 * slope, -0.2],
                          [2.0, 4.0 + 2 * slope, 0.3]], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([0.05, 0.1, 0.3, 0.45], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t, p: module.transform_points(p, t), (theta, x))


def test_spatial_derivative_is_velocity_ratio():
    # d phi / dx = v(phi(x)) / v(x)
    module = CPAB1D(6, True)
    theta = _theta(module, 1, 2.0, seed=3)[0]
    x = torch.linspace(0.01, 0.99, 40, dtype=torch.float64, requires_grad=True)
    phi = module.transform_points(x, theta)
    (grad_x,) = torch.autograd.grad(phi.sum(), x)
    basis = rref_basis(6, True)
    params = (basis @ theta).reshape(6, 2)

    def velocity(p):
        cell = torch.clamp(torch.floor(p * 6), 0, 5).long()
        return params[cell, 0] * p + params[cell, 1]

    torch.testing.assert_close(grad_x, velocity(phi.detach()) / velocity(x.detach()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('nc,zb', [(5, True), (16, False), (64, True)])
def test_float32_gradients_match_float64(nc, zb):
    module = CPAB1D(nc, zb)
    theta64 = _theta(module, 4, 2.0, seed=nc).requires_grad_(True)
    theta32 = theta64.detach().float().requires_grad_(True)
    s = torch.randn(4, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(4, 33, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x = torch.linspace(0, 1, 57, dtype=torch.float64)
    (module.transform_sequence(s, theta64, 33) * w).sum().backward()
    (module.transform_sequence(s.float(), theta32, 33) * w.float()).sum().backward()
    scale = theta64.grad.abs().max()
    assert (theta32.grad.double() - theta64.grad).abs().max() <= 5e-5 * scale
    g64, = torch.autograd.grad((module.transform_points(x, theta64) * x).sum(), theta64)
    g32, = torch.autograd.grad((module.transform_points(x.float(), theta32) * x.float()).sum(), theta32)
    assert (g32.double() - g64).abs().max() <= 1e-5 * g64.abs().max()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_exprel_and_log1p_ratio_values_and_derivatives(dtype):
    from ditask_mm.cpab.integration import exprel, log1p_ratio
    z64 = torch.cat([torch.tensor([0.0, 1e-30, -1e-30, 1e-9, -1e-9]),
                     torch.logspace(-8, 1, 60), -torch.logspace(-8, -0.05, 60)]).double()
    z = z64.to(dtype).requires_grad_(True)
    safe = torch.where(z64 == 0, torch.ones_like(z64), z64)
    ref_e = torch.where(z64 == 0, torch.ones_like(z64), torch.expm1(safe) / safe)
    ref_l = torch.where(z64 == 0, torch.ones_like(z64), torch.log1p(safe) / safe)
    # float64 derivatives: long power series for |z| < 1/2, direct forms beyond
    small = z64.abs() < 0.5
    series_e = sum(n * z64 ** (n - 1) / float(math.factorial(n + 1)) for n in range(1, 25))
    series_l = sum((-1) ** n * n * z64 ** (n - 1) / (n + 1) for n in range(1, 80))
    d_e = torch.where(small, series_e, (torch.exp(safe) - ref_e) / safe)
    d_l = torch.where(small, series_l, (1 / (1 + safe) - ref_l) / safe)
    rel, rel_grad = (1e-6, 1e-5) if dtype == torch.float32 else (1e-12, 1e-12)
    for fn, ref, dref in ((exprel, ref_e, d_e), (log1p_ratio, ref_l, d_l)):
        out = fn(z)
        (grad,) = torch.autograd.grad(out.sum(), z)
        assert ((out.double() - ref).abs() / ref.abs()).max() < rel
        assert ((grad.double() - dref).abs() / dref.abs()).max() < rel_grad


def test_hit_time_accurate_for_strong_deceleration():
    # v(x) = 0.5 + r and v(boundary) = r with dyadic inputs (exact in float32):
    # t_hit = log(v(boundary) / v(x)) / a must stay accurate as r -> 0, where
    # 1 + a dx / v would cancel.
    from ditask_mm.cpab.integration import _hit_time
    r = 2.0 ** -torch.arange(2, 23, dtype=torch.float64)
    a = torch.full_like(r, -2.0)
    b = 1 + r
    x = torch.full_like(r, 0.25)
    boundary = torch.full_like(r, 0.5)
    exact = torch.log(r / (0.5 + r)) / a
    for dtype, rel in ((torch.float32, 1e-6), (torch.float64, 1e-14)):
        t_hit = _hit_time(x.to(dtype), a.to(dtype), b.to(dtype), boundary.to(dtype)).double()
        assert ((t_hit - exact).abs() / exact).max() < rel
