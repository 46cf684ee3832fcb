"""difw's rref basis: exact equality with the stored arrays and its structure."""
import numpy as np
import pytest
import torch

from ditask_mm.cpab import CPAB1D, rref_basis

from .reference_data import CONFIGS, load_config, load_reference


def _load(nc: int, zb: bool):
    return load_config(nc, zb)


@pytest.mark.parametrize('nc,zb', CONFIGS)
def test_basis_equals_difw_exactly(nc, zb):
    ref = _load(nc, zb)
    basis = rref_basis(nc, zb)
    assert basis.dtype == torch.float64
    assert tuple(basis.shape) == ref['B'].shape == (2 * nc, int(ref['d']))
    assert torch.equal(basis, torch.from_numpy(ref['B']))
    assert torch.equal(basis.float(), torch.from_numpy(ref['B32']))


def test_basis_tiny_example():
    ref = load_reference('tiny_example.npz')
    assert torch.equal(rref_basis(4, True).to(torch.from_numpy(ref['B']).dtype), torch.from_numpy(ref['B']))


def test_basis_nc4_documented_example():
    expected_t = torch.tensor([[1, 0, -1, .5, 0, 0, 0, 0],
                               [.5, 0, .5, 0, -1, .75, 0, 0],
                               [1 / 3, 0, 1 / 3, 0, 1 / 3, 0, -1, 1]], dtype=torch.float64)
    assert torch.equal(rref_basis(4, True).t(), expected_t)


def test_basis_no_zero_boundary_layout():
    nc = 4
    basis = rref_basis(nc, False)
    assert basis.shape == (8, 5)
    # column 0: x_1 - x on cell 0; column nc-1: x / nc everywhere; column nc: x - x_{nc-1} on the last cell.
    assert basis[:, 0].tolist() == [-1, 0.25, 0, 0, 0, 0, 0, 0]
    assert basis[:, nc - 1].tolist() == [0.25, 0, 0.25, 0, 0.25, 0, 0.25, 0]
    assert basis[:, nc].tolist() == [0, 0, 0, 0, 0, 0, 1, -0.75]
    # the remaining columns are the zero-boundary ramps for k = 1 .. nc-2
    assert torch.equal(basis[:, 1:nc - 1], rref_basis(nc, True)[:, :nc - 2])


@pytest.mark.parametrize('nc', [1, 2, 3, 4, 7, 16, 49, 64])
@pytest.mark.parametrize('zb', [True, False])
def test_basis_constraints_and_rank(nc, zb):
    basis = rref_basis(nc, zb)
    d = nc - 1 if zb else nc + 1
    assert basis.shape == (2 * nc, d)
    slopes, intercepts = basis[0::2], basis[1::2]
    vertices = torch.arange(1, nc, dtype=torch.float64) / nc
    left = slopes[:-1] * vertices[:, None] + intercepts[:-1]
    right = slopes[1:] * vertices[:, None] + intercepts[1:]
    torch.testing.assert_close(left, right, rtol=0, atol=1e-14)  # continuity
    if zb:
        # exact zero velocity at both ends, also in float32
        for dtype in (torch.float64, torch.float32):
            b = basis.to(dtype)
            assert torch.all(b[1] == 0)
            assert torch.all(b[-2] + b[-1] == 0)
    if d:
        assert np.linalg.matrix_rank(basis.numpy()) == d
        # max-abs normalised columns, except difw's global linear column (slopes 1/nc)
        col_max = basis.abs().amax(dim=0)
        if not zb and nc > 1:
            assert torch.all(basis[0::2, nc - 1] == 1 / nc) and torch.all(basis[1::2, nc - 1] == 0)
            col_max = torch.cat([col_max[:nc - 1], col_max[nc:]])
        assert torch.all(col_max == 1)


@pytest.mark.parametrize('nc,zb,d', [(1, True, 0), (1, False, 2), (2, True, 1), (2, False, 3),
                                     (16, True, 15), (64, True, 63), (64, False, 65)])
def test_theta_dim(nc, zb, d):
    module = CPAB1D(nc, zero_boundary=zb)
    assert module.theta_dim == d
    assert module.tessellation_size == nc and module.zero_boundary is zb
    assert module.basis.shape == (2 * nc, d)
    assert module.identity().shape == (d,)
    assert module.identity(3).shape == (3, d)


def test_module_basis_buffer_follows_dtype():
    module = CPAB1D(5)
    assert module.basis.dtype == torch.get_default_dtype()
    assert torch.equal(module.basis, rref_basis(5).to(module.basis.dtype))
    module.double()
    assert module.basis.dtype == torch.float64
    assert torch.equal(module.basis, rref_basis(5))
    assert module.identity().dtype == torch.float64
    module.to(torch.float32)
    assert module.basis.dtype == torch.float32 and module.identity(2).dtype == torch.float32
    assert 'basis' not in module.state_dict()


@pytest.mark.parametrize('bad', [0, -3])
def test_invalid_tessellation_size(bad):
    with pytest.raises(ValueError, match='tessellation_size'):
        CPAB1D(bad)
    with pytest.raises(ValueError, match='tessellation_size'):
        rref_basis(bad)


def test_non_integer_tessellation_size():
    with pytest.raises(TypeError, match='tessellation_size'):
        CPAB1D(4.0)
