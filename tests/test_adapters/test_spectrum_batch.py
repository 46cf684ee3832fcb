"""Batched spectra: the same values and gradients as layer by layer, in fewer CPAB calls."""
import pytest
import torch
import torch.nn as nn

from ditask_mm.adapters import DiTASKLinear, batched_spectra, compute_spectra
from ditask_mm.cpab import CPAB1D


def mixed_layers(dtype=torch.float32):
    """Layers that fall into several groups: sizes, splits, tasks, no shared path, both spectrum modes."""
    torch.manual_seed(0)
    specs = [
        dict(base=(12, 36), num_splits=3),                               # qkv-like, k=12
        dict(base=(12, 12), tasks=['a', 'b']),                           # k=12, shared 8 + tasks 4
        dict(base=(12, 48), tasks=['a', 'b']),                           # fc1-like, k=12
        dict(base=(48, 12), tasks=['a', 'b'], shared=False),             # fc2-like, no shared θ
        dict(base=(24, 24)),                                             # k=24
        dict(base=(12, 12), spectrum_mode='value', tasks=['a']),         # same k, other mode
    ]
    layers = nn.ModuleList()
    for spec in specs:
        base = nn.Linear(*spec.pop('base')).to(dtype)
        layer = DiTASKLinear(base, tessellation_size=8, task_tessellation_size=4, theta_init='kaiming', **spec)
        layers.append(layer)
    return layers


def reference(layers):
    out = {}
    for layer in layers:
        for task, _, _ in layer.transform_paths():
            out[(id(layer), task)] = layer.adapted_spectrum(task)
    return out


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_batched_equals_per_layer_values_and_gradients(dtype):
    layers = mixed_layers(dtype)
    batched = compute_spectra(list(layers))
    ref = reference(layers)
    assert sum(len(v) for v in batched.values()) == len(ref) == 12
    for layer, spectra in batched.items():
        for task, values in spectra.items():
            assert torch.equal(values, ref[(id(layer), task)]), (layer, task)

    weights = {key: torch.randn_like(v) for key, v in ref.items()}

    def grads(spectra):
        layers.zero_grad()
        sum((spectra[key] * weights[key]).sum() for key in weights).backward()
        return [p.grad.clone() for p in layers.parameters() if p.requires_grad]

    per_layer = grads(reference(layers))
    together = grads({(id(layer), task): v for layer, d in compute_spectra(list(layers)).items()
                      for task, v in d.items()})
    assert len(per_layer) == 12  # every θ gets a gradient
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12  # only the summation order of split rows differs
    for a, b in zip(per_layer, together):
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance * a.abs().max().item())


def count_cpab_calls(monkeypatch):
    calls = []
    for name in ('transform_sequence', 'transform_values'):
        original = getattr(CPAB1D, name)

        def wrapped(self, *args, _original=original, **kwargs):
            calls.append(self.tessellation_size)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(CPAB1D, name, wrapped)
    return calls


def test_context_makes_one_call_per_group_and_clears(monkeypatch):
    layers = mixed_layers()
    x12 = torch.randn(5, 12)
    calls = count_cpab_calls(monkeypatch)
    with batched_spectra(layers) as count:
        assert count == len(layers)
        # groups: (8, k=12, resample) (4, k=12, resample) (8, k=24) (8, k=12, value) (4, k=12, value)
        assert len(calls) == 5
        outputs = [layers[1](x12, task=t) for t in (None, 'a', 'b')]
        assert len(calls) == 5  # the forward read the precomputed spectra
    assert all(layer.precomputed_spectra is None for layer in layers)
    for out, task in zip(outputs, (None, 'a', 'b')):
        torch.testing.assert_close(out, layers[1](x12, task=task), rtol=0, atol=0)
    assert len(calls) == 5 + 3


def test_context_is_a_noop_without_grad_or_nested(monkeypatch):
    layers = mixed_layers()
    with torch.no_grad(), batched_spectra(layers) as count:
        assert count == 0 and layers[0].precomputed_spectra is None
    with batched_spectra(layers) as outer:
        spectra = layers[0].precomputed_spectra
        with batched_spectra(layers) as inner:
            assert inner == 0 and layers[0].precomputed_spectra is spectra
        assert outer == len(layers) and layers[0].precomputed_spectra is spectra


def test_context_clears_after_an_error():
    layers = mixed_layers()
    with pytest.raises(RuntimeError, match='boom'):
        with batched_spectra(layers):
            raise RuntimeError('boom')
    assert all(layer.precomputed_spectra is None for layer in layers)


def test_stale_svd_is_refreshed_before_batching():
    layers = mixed_layers()
    compute_spectra(list(layers))
    with torch.no_grad():
        layers[4].weight.mul_(2.0)  # in-place write: the cached SVD is stale
    spectra = compute_spectra(list(layers))
    torch.testing.assert_close(spectra[layers[4]][None][0, 0], torch.linalg.svdvals(layers[4].weight)[0])
