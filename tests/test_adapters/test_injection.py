"""Injecting adapters into mmseg models by name pattern, and what trains."""
import copy

import pytest
import torch
import torch.nn as nn
from mmseg.models.backbones import SwinTransformer, VisionTransformer

import ditask_mm.models  # noqa: F401
from ditask_mm.adapters import (AdapterConfig, DiTASKLinear, LoRALinear, MTLoRALinear,
                                adapter_layers, adapter_task, inject_adapters, set_trainable)

SWIN_TARGETS = [r'.*\.w_msa\.(qkv|proj)', r'.*\.ffn\.layers\.(0\.0|1)']


def tiny_swin() -> SwinTransformer:
    torch.manual_seed(0)
    model = SwinTransformer(pretrain_img_size=64, embed_dims=24, depths=(2, 2), num_heads=(2, 4),
                            window_size=4, strides=(4, 2), out_indices=(0, 1), drop_path_rate=0.0)
    model.eval()  # mmseg's SwinTransformer.train() returns None, so no chaining
    return model


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=2,
                              num_heads=2, out_indices=(1, ))
    model.eval()
    return model


def ditask_swin_config(**adapter):
    return dict(adapter=dict(type='DiTASKLinear', tessellation_size=8, **adapter),
                target_modules=SWIN_TARGETS,
                overrides=[dict(pattern=r'.*\.qkv', num_splits=3),
                           dict(pattern=r'stages\.\d+\.blocks\.1\.(attn\.w_msa\.proj|ffn\.layers\.(0\.0|1))',
                                tasks=['semseg', 'normals'], task_tessellation_size=4)])


def test_ditask_on_mmseg_swin_keeps_outputs_and_checkpoint_keys():
    model = tiny_swin()
    reference = copy.deepcopy(model)
    x = torch.randn(2, 3, 64, 64)
    replaced = inject_adapters(model, ditask_swin_config())
    assert len(replaced) == 4 * 4  # qkv, proj, fc1, fc2 in each of the 4 blocks
    assert all(isinstance(m, DiTASKLinear) for m in replaced.values())
    assert replaced['stages.0.blocks.0.attn.w_msa.qkv'].num_splits == 3
    assert replaced['stages.1.blocks.1.ffn.layers.1'].tasks == ('semseg', 'normals')
    assert replaced['stages.1.blocks.0.ffn.layers.1'].tasks == ()
    assert replaced['stages.0.blocks.1.attn.w_msa.qkv'].tasks == ()  # no dead qkv task θ
    # θ = 0: the adapted model computes what the pretrained one does
    for out, ref in zip(model(x), reference(x)):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # a plain-model checkpoint still loads: only θ keys are new
    result = model.load_state_dict(reference.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert all('theta_' in k for k in result.missing_keys) and result.missing_keys
    # with θ ≠ 0 the output changes and gradients flow to every θ that is used
    for _, layer in adapter_layers(model):
        with torch.no_grad():
            layer.theta_shared.normal_(0, 0.5)
    set_trainable(model)
    outs = model(x)
    assert (outs[1] - reference(x)[1]).abs().max() > 1e-3
    sum(o.sum() for o in outs).backward()
    for name, param in model.named_parameters():
        if 'theta_shared' in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_reloading_pretrained_weights_refreshes_every_cache():
    model = tiny_swin()
    inject_adapters(model, ditask_swin_config())
    x = torch.randn(1, 3, 64, 64)
    model(x)
    other = tiny_swin()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.load_state_dict(other.state_dict(), strict=False)
    for out, ref in zip(model(x), other(x)):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_adapter_task_switches_task_transforms_only_where_they_exist():
    model = tiny_swin()
    layers = inject_adapters(model, ditask_swin_config(theta_init='kaiming'))
    x = torch.randn(1, 3, 64, 64)
    shared = model(x)[1]
    with adapter_task(model, 'semseg'):
        semseg = model(x)[1]
        assert layers['stages.1.blocks.1.ffn.layers.1'].active_task == 'semseg'
    assert layers['stages.1.blocks.1.ffn.layers.1'].active_task is None
    assert (semseg - shared).abs().max() > 1e-4
    torch.testing.assert_close(model(x)[1], shared)
    with pytest.raises(KeyError, match="no adapter layer of SwinTransformer has task 'depth'"):
        with adapter_task(model, 'depth'):
            pass


def test_set_trainable_policies():
    model = tiny_swin()
    inject_adapters(model, ditask_swin_config())
    counts = set_trainable(model)
    thetas = sum(p.numel() for n, p in model.named_parameters() if 'theta_' in n)
    assert counts['trainable'] == counts['adapter'] == thetas
    norms = sum(p.numel() for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters())
    counts = set_trainable(model, trainable=[r'(^|\.)norm\d*\.'])
    assert counts['other'] == norms and counts['trainable'] == thetas + norms
    model.train()
    model.eval()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == thetas + norms
    # an adapter's own frozen weight never unfreezes, even under a catch-all pattern
    set_trainable(model, trainable=[r'.*'])
    for _, layer in adapter_layers(model):
        assert not layer.weight.requires_grad and not layer.bias.requires_grad
    with pytest.raises(ValueError, match=r"patterns \['nonexistent'\] match no parameter"):
        set_trainable(model, trainable=['nonexistent'])


def test_lora_and_mtlora_on_mmseg_swin():
    model = tiny_swin()
    reference = copy.deepcopy(model)
    x = torch.randn(1, 3, 64, 64)
    inject_adapters(model, dict(adapter=dict(type='LoRALinear', rank=4), target_modules=SWIN_TARGETS))
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 16
    torch.testing.assert_close(model(x)[1], reference(x)[1])
    model = copy.deepcopy(reference)
    inject_adapters(model, dict(adapter=dict(type='MTLoRALinear', rank=8, dropout=0.0),
                                target_modules=SWIN_TARGETS,
                                overrides=[dict(pattern=r'.*blocks\.1\.ffn.*', tasks=['a'])]))
    assert sum(isinstance(m, MTLoRALinear) for m in model.modules()) == 16
    torch.testing.assert_close(model(x)[1], reference(x)[1])


def test_ditask_on_mmseg_vision_transformer():
    model = tiny_vit()
    reference = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)
    replaced = inject_adapters(model, dict(adapter=dict(type='DiTASKLinear', tessellation_size=8),
                                           target_modules=[r'layers\.\d+\.ffn\.layers\.(0\.0|1)']))
    assert len(replaced) == 4
    torch.testing.assert_close(model(x)[0], reference(x)[0], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        replaced['layers.1.ffn.layers.0.0'].theta_shared.normal_()
    assert (model(x)[0] - reference(x)[0]).abs().max() > 1e-3
    # nn.MultiheadAttention never calls out_proj.forward: refuse instead of doing nothing
    with pytest.raises(ValueError, match='MultiheadAttention'):
        inject_adapters(tiny_vit(), dict(adapter=dict(type='DiTASKLinear'),
                                         target_modules=[r'.*\.out_proj']))


def test_bad_configs_fail_loudly():
    with pytest.raises(ValueError, match='no module of SwinTransformer matches'):
        inject_adapters(tiny_swin(), dict(adapter=dict(type='DiTASKLinear'), target_modules=['nope']))
    with pytest.raises(ValueError, match=r"patterns \['.*typo'\] match no module"):
        inject_adapters(tiny_swin(), dict(adapter=dict(type='DiTASKLinear'),
                                          target_modules=[r'.*\.qkv', r'.*typo']))
    with pytest.raises(TypeError, match='is a Sequential, not the nn.Linear that DiTASKLinear wraps'):
        inject_adapters(tiny_swin(), dict(adapter=dict(type='DiTASKLinear'),
                                          target_modules=[r'stages\.0\.blocks\.0\.ffn\.layers\.0']))
    with pytest.raises(KeyError, match='not a registered adapter'):
        inject_adapters(tiny_swin(), dict(adapter=dict(type='Conv2d'), target_modules=[r'.*\.qkv']))
    with pytest.raises(KeyError, match="needs a 'type' key"):
        AdapterConfig(adapter=dict(rank=4), target_modules=['x'])
    with pytest.raises(ValueError, match='invalid regular expression'):
        AdapterConfig(adapter=dict(type='LoRALinear'), target_modules=['(unclosed'])
    model = tiny_swin()
    inject_adapters(model, dict(adapter=dict(type='LoRALinear'), target_modules=[r'.*\.qkv']))
    with pytest.raises(TypeError, match='already adapted'):
        inject_adapters(model, dict(adapter=dict(type='LoRALinear'), target_modules=[r'.*\.qkv']))
