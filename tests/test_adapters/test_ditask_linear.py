"""DiTASKLinear: what one adapted layer computes."""
import pytest
import torch
import torch.nn as nn

import ditask_mm  # noqa: F401
from ditask_mm.adapters import DiTASKLinear
from ditask_mm.cpab import CPAB1D


def orthogonal(n: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=dtype))
    return q


def linear_with_spectrum(spectrum, in_features: int, seed: int = 0, dtype=torch.float64) -> nn.Linear:
    """A linear layer whose weight has exactly the given singular values."""
    g = torch.Generator().manual_seed(seed)
    s = torch.as_tensor(spectrum, dtype=dtype)
    out = len(s)
    U = orthogonal(out, g, dtype)
    V = orthogonal(in_features, g, dtype)[:, :out]
    lin = nn.Linear(in_features, out).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(U @ torch.diag(s) @ V.T)
    return lin


def test_resampled_spectrum_matches_the_difw_worked_example():
    # docs/method.md §3.7: nc=4, θ=[0.8,−0.5,0.3], data 8..1 → transform_data
    lin = linear_with_spectrum([8, 7, 6, 5, 4, 3, 2, 1], in_features=10)
    layer = DiTASKLinear(lin, tessellation_size=4)
    with torch.no_grad():
        layer.theta_shared.copy_(torch.tensor([0.8, -0.5, 0.3]))
    expected = torch.tensor([8, 6.10183, 5.419018, 5.032277, 4.308294, 2.533958, 1.740818, 1],
                            dtype=torch.float64)
    torch.testing.assert_close(layer.adapted_spectrum()[0], expected, atol=2e-6, rtol=0)
    # the rebuilt matrix keeps the singular vectors and has exactly that spectrum
    W = layer.adapted_weight()
    torch.testing.assert_close(torch.linalg.svdvals(W), expected, atol=2e-6, rtol=0)
    U0, _, _ = torch.linalg.svd(lin.weight.detach(), full_matrices=False)
    U1, _, _ = torch.linalg.svd(W, full_matrices=False)
    torch.testing.assert_close((U0 * U1).sum(0).abs(), torch.ones(8, dtype=torch.float64), atol=1e-6, rtol=0)


def test_value_mode_is_paper_eq6():
    spectrum = torch.linspace(5, 0.5, 12, dtype=torch.float64)
    layer = DiTASKLinear(linear_with_spectrum(spectrum, 16), tessellation_size=5, spectrum_mode='value')
    theta = torch.tensor([0.7, -1.1, 0.4, 0.9], dtype=torch.float64)
    with torch.no_grad():
        layer.theta_shared.copy_(theta)
    cpab = CPAB1D(5).double()
    expected = 5.0 * cpab.transform_points(spectrum / 5.0, theta)
    torch.testing.assert_close(layer.adapted_spectrum()[0], expected, atol=1e-10, rtol=0)
    resample = DiTASKLinear(linear_with_spectrum(spectrum, 16), tessellation_size=5)
    with torch.no_grad():
        resample.theta_shared.copy_(theta)
    assert (resample.adapted_spectrum() - layer.adapted_spectrum()).abs().max() > 1e-3


def test_qkv_split_gives_each_block_its_own_svd_and_the_same_theta():
    torch.manual_seed(0)
    lin = nn.Linear(16, 48).double()
    layer = DiTASKLinear(lin, tessellation_size=6, num_splits=3)
    theta = torch.randn(5, dtype=torch.float64)
    with torch.no_grad():
        layer.theta_shared.copy_(theta)
    cpab = CPAB1D(6).double()
    blocks = []
    for block in lin.weight.detach().split(16, dim=0):
        U, S, Vh = torch.linalg.svd(block, full_matrices=False)
        blocks.append(U @ torch.diag(cpab.transform_sequence(S, theta)) @ Vh)
    torch.testing.assert_close(layer.adapted_weight(), torch.cat(blocks), atol=1e-10, rtol=0)
    whole = DiTASKLinear(nn.Linear(16, 48).double(), tessellation_size=6)
    whole.load_state_dict({'weight': lin.weight, 'bias': lin.bias, 'theta_shared': theta})
    assert (whole.adapted_weight() - layer.adapted_weight()).abs().max() > 1e-3


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_zero_theta_is_the_pretrained_layer(dtype, tol):
    torch.manual_seed(1)
    lin = nn.Linear(24, 72).to(dtype)
    layer = DiTASKLinear(lin, tessellation_size=8, tasks=['a'], num_splits=3)
    x = torch.randn(5, 24, dtype=dtype)
    ref = x @ lin.weight.detach().T + lin.bias.detach()
    torch.testing.assert_close(layer(x), ref, atol=tol, rtol=0)
    torch.testing.assert_close(layer(x, task='a'), ref, atol=tol, rtol=0)


def test_extreme_singular_values_are_kept_with_zero_boundary():
    torch.manual_seed(2)
    layer = DiTASKLinear(nn.Linear(40, 30).double(), tessellation_size=16, tasks=['t'])
    with torch.no_grad():
        layer.theta_shared.normal_(0, 3)
        layer.theta_tasks['t'].normal_(0, 3)
    S = layer.svd.get(layer.weight)[1][0]
    for task in (None, 't'):
        new = layer.adapted_spectrum(task)[0].detach()
        assert new[0] == pytest.approx(S[0].item(), abs=1e-12)
        assert new[-1] == pytest.approx(S[-1].item(), abs=1e-12)
        assert torch.all(new[:-1] >= new[1:])  # ordering kept
        assert (new - S).abs().max() > 1e-3


def test_svd_is_cached_and_refreshed_only_when_the_weight_changes():
    torch.manual_seed(3)
    layer = DiTASKLinear(nn.Linear(12, 36), tessellation_size=4, num_splits=3)
    x = torch.randn(3, 12)
    opt = torch.optim.SGD([layer.theta_shared], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        layer(x).pow(2).sum().backward()
        opt.step()
    assert layer.svd.num_refreshes == 1
    # a new pretrained weight loaded in place is picked up once
    new = nn.Linear(12, 36)
    layer.load_state_dict({'weight': new.weight, 'bias': new.bias,
                           'theta_shared': torch.zeros(3)})
    torch.testing.assert_close(layer(x), new(x), atol=2e-5, rtol=0)
    assert layer.svd.num_refreshes == 2
    layer(x)
    assert layer.svd.num_refreshes == 2
    # moving keeps the cache; fp64 recomputes it in fp64; half keeps it fp32
    layer.to('cpu')
    layer(x)
    assert layer.svd.num_refreshes == 2
    layer.double()
    layer(x.double())
    assert layer.svd.num_refreshes == 3 and layer.svd.S.dtype == torch.float64
    layer.half()
    assert layer.svd.S.dtype == torch.float32
    assert layer.adapted_weight().dtype == torch.float32
    assert layer.svd.num_refreshes == 3


def test_state_dict_holds_weights_and_thetas_only():
    layer = DiTASKLinear(nn.Linear(8, 24), tessellation_size=4, tasks=['a', 'b'], num_splits=3)
    assert sorted(layer.state_dict()) == ['bias', 'theta_shared', 'theta_tasks.a', 'theta_tasks.b', 'weight']
    task_only = DiTASKLinear(nn.Linear(8, 8), tessellation_size=4, tasks=['a'], shared=False)
    assert 'theta_shared' not in task_only.state_dict()
    x = torch.randn(2, 8)
    torch.testing.assert_close(task_only(x), nn.functional.linear(x, task_only.weight, task_only.bias))


def test_only_thetas_get_gradients_and_bias_is_frozen():
    torch.manual_seed(4)
    layer = DiTASKLinear(nn.Linear(10, 20), tessellation_size=4, tasks=['a', 'b'], theta_init='kaiming')
    x = torch.randn(6, 10)
    (layer(x).sum() + layer(x, task='a').sum()).backward()
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.weight.grad is None and layer.bias.grad is None
    assert layer.theta_shared.grad.abs().sum() > 0
    assert layer.theta_tasks['a'].grad.abs().sum() > 0
    assert layer.theta_tasks['b'].grad is None  # task b was not used
    assert {n for n, _ in layer.adapter_parameters()} == {'theta_shared', 'theta_tasks.a', 'theta_tasks.b'}


def test_theta_initialisation():
    zeros = DiTASKLinear(nn.Linear(8, 8), tessellation_size=64)
    assert torch.count_nonzero(zeros.theta_shared) == 0
    torch.manual_seed(5)
    kaiming = DiTASKLinear(nn.Linear(8, 8), tessellation_size=64, tasks=['t'], theta_init='kaiming')
    bound = 1 / 63 ** 0.5  # kaiming_uniform_(a=√5) on (1, d): U(−1/√d, 1/√d)
    assert kaiming.theta_shared.abs().max() <= bound
    assert kaiming.theta_shared.abs().max() > 0.5 * bound
    assert kaiming.theta_tasks['t'].abs().max() <= 1 / 3 ** 0.5


def test_gradcheck_float64():
    torch.manual_seed(6)
    layer = DiTASKLinear(nn.Linear(6, 18).double(), tessellation_size=5, tasks=['t'], num_splits=3)
    x = torch.randn(4, 6, dtype=torch.float64)
    theta_s = (0.5 * torch.randn(4, dtype=torch.float64)).requires_grad_()
    theta_t = (0.5 * torch.randn(3, dtype=torch.float64)).requires_grad_()

    for mode in ('resample', 'value'):
        layer.spectrum_mode = mode
        assert torch.autograd.gradcheck(lambda a, b: tuple(
            torch.func.functional_call(layer, {'theta_shared': a, 'theta_tasks.t': b}, (x, ), dict(task=t))
            for t in (None, 't')), (theta_s, theta_t))


def test_main_path_dropout_and_eval():
    torch.manual_seed(7)
    lin = nn.Linear(32, 32)
    layer = DiTASKLinear(lin, tessellation_size=4, main_path_dropout=0.5)
    x = torch.randn(8, 32)
    assert (layer(x) - lin(x)).abs().max() > 1e-2  # the frozen path itself sees dropped inputs
    layer.eval()
    torch.testing.assert_close(layer(x), lin(x), atol=2e-5, rtol=0)


def test_merge_and_eval_weight_cache():
    torch.manual_seed(8)
    layer = DiTASKLinear(nn.Linear(10, 30), tessellation_size=8, tasks=['a'], num_splits=3)
    with torch.no_grad():
        layer.theta_shared.normal_()
        layer.theta_tasks['a'].normal_()
    layer.eval()
    x = torch.randn(4, 10)
    for task in (None, 'a'):
        merged = layer.merge(task)
        assert type(merged) is nn.Linear
        torch.testing.assert_close(merged(x), layer(x, task=task), atol=1e-5, rtol=0)
    with torch.no_grad():
        w1 = layer.adapted_weight('a')
        assert layer.adapted_weight('a') is w1  # built once in eval
        layer.theta_tasks['a'].add_(0.1)  # an optimizer step bumps the version
        assert not torch.equal(layer.adapted_weight('a'), w1)
    with pytest.raises(KeyError, match="no adaptation for task 'nope'"):
        layer.merge('nope')


def test_weight_rebuild_stays_fp32_under_autocast():
    torch.manual_seed(9)
    layer = DiTASKLinear(nn.Linear(16, 16), tessellation_size=4)
    with torch.no_grad():
        layer.theta_shared.normal_()
    x = torch.randn(2, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert layer.adapted_weight().dtype == torch.float32
        y = layer(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), layer(x), atol=0.1, rtol=0.02)


def test_bad_arguments_are_rejected():
    with pytest.raises(TypeError, match='wraps an nn.Linear'):
        DiTASKLinear(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match='num_splits=3 does not divide'):
        DiTASKLinear(nn.Linear(4, 8), num_splits=3)
    with pytest.raises(ValueError, match='spectrum_mode'):
        DiTASKLinear(nn.Linear(4, 8), spectrum_mode='warp')
    with pytest.raises(KeyError, match="no entry for task 'b'"):
        DiTASKLinear(nn.Linear(4, 8), tasks=['a', 'b'], task_tessellation_size={'a': 4})
    with pytest.raises(ValueError, match='needs at least one task'):
        DiTASKLinear(nn.Linear(4, 8), shared=False)


@pytest.mark.parametrize('splits,shape', [(3, (16, 48)), (1, (16, 64)), (1, (64, 16))])
def test_factored_and_dense_forward_agree_with_gradients(splits, shape):
    torch.manual_seed(10)
    dense = DiTASKLinear(nn.Linear(*shape).double(), tessellation_size=8, tasks=['t'],
                         num_splits=splits, theta_init='kaiming', compute_mode='dense')
    factored = DiTASKLinear(nn.Linear(*shape).double(), tessellation_size=8, tasks=['t'],
                            num_splits=splits, compute_mode='factored')
    factored.load_state_dict(dense.state_dict())
    x = torch.randn(2, 5, shape[0], dtype=torch.float64, requires_grad=True)
    for task in (None, 't'):
        yd, yf = dense(x, task=task), factored(x, task=task)
        torch.testing.assert_close(yf, yd, atol=1e-12, rtol=0)
        g = torch.randn_like(yd)
        theta = 'theta_shared' if task is None else 'theta_tasks.t'
        gd = torch.autograd.grad(yd, [x, dict(dense.named_parameters())[theta]], g)
        gf = torch.autograd.grad(yf, [x, dict(factored.named_parameters())[theta]], g)
        for a, b in zip(gd, gf):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_auto_mode_picks_the_cheaper_form():
    from ditask_mm.adapters.svd_cache import factored_is_cheaper
    # Swin-T stage 1 at batch 8, 448²: qkv blocks are square (dense wins), fc1 is 96 -> 384
    assert not factored_is_cheaper(100_352, 96, 96, 96, needs_grad=True)
    assert factored_is_cheaper(100_352, 384, 96, 96, needs_grad=True)
    # few tokens: rebuilding a big matrix is not worth it
    assert factored_is_cheaper(16, 3072, 768, 768, needs_grad=True)
    layer = DiTASKLinear(nn.Linear(96, 384), tessellation_size=8)
    calls = []
    layer.svd.apply_factored = lambda x, s: calls.append('factored') or torch.zeros(*x.shape[:-1], 384)
    layer(torch.randn(4, 96))
    assert calls == ['factored']
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(4, 96))  # eval + no_grad: cached dense weight
    assert calls == ['factored']
