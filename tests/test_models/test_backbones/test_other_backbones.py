"""DiTASK on other backbones, by config: mmseg ViT, mmpretrain ViT and DINOv2, Swin-B."""
import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ditask_mm.models  # noqa: F401
from ditask_mm.adapters import DiTASKLinear, DiTASKMultiheadAttention, adapter_layers, inject_adapters, set_trainable
from ditask_mm.engine import resolve_tasks
from ditask_mm.registry import MODELS

REPO = Path(__file__).resolve().parents[3]
FFN = r'layers\.\d+\.ffn\.layers\.(0\.0|1)'


def perturb_thetas(model, std=0.5):
    torch.manual_seed(123)
    with torch.no_grad():
        for _, layer in adapter_layers(model):
            layer.theta_shared.normal_(0, std)


def check_adapted(model, x, expected_layers):
    """θ = 0 reproduces the plain model; θ ≠ 0 changes it; only θ trains."""
    reference = copy.deepcopy(model)
    config = dict(adapter=dict(type='DiTASKLinear', tessellation_size=8), target_modules=expected_layers['linear'],
                  overrides=[dict(pattern=r'.*\.qkv', num_splits=3)])
    if expected_layers.get('attention'):
        config = dict(config, target_modules=[*expected_layers['linear'], expected_layers['attention']],
                      overrides=[dict(pattern=expected_layers['attention'], type='DiTASKMultiheadAttention'),
                                 *config['overrides']])
    replaced = inject_adapters(model, config)
    assert len(replaced) == expected_layers['count']
    model.eval()
    reference.eval()
    ref = reference(x)[-1]
    torch.testing.assert_close(model(x)[-1], ref, atol=1e-4, rtol=1e-4)
    # the plain model's checkpoint loads strictly once θ keys are supplied
    plain_keys = set(reference.state_dict())
    theta_keys = {k for k in model.state_dict() if 'theta_' in k}
    assert set(model.state_dict()) == plain_keys | theta_keys
    model.load_state_dict({**reference.state_dict(), **{k: model.state_dict()[k] for k in theta_keys}})
    perturb_thetas(model)
    out = model(x)[-1]
    assert (out - ref).abs().max() > 1e-3
    set_trainable(model, trainable=['.*'])  # catch-all still leaves the adapted weights frozen
    frozen = {id(p) for _, layer in adapter_layers(model) for p in (layer.weight, layer.bias) if p is not None}
    for p in model.parameters():
        assert p.requires_grad != (id(p) in frozen)
    set_trainable(model)
    model.train()
    model(x)[-1].square().mean().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == ('theta_' in name), name
    return replaced


def test_mmseg_vision_transformer_attention_and_ffn():
    from mmseg.models.backbones import VisionTransformer
    torch.manual_seed(0)
    model = VisionTransformer(img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=2, num_heads=2,
                              out_indices=(1, ), drop_path_rate=0.0)
    replaced = check_adapted(model, torch.randn(2, 3, 32, 32),
                             dict(linear=[FFN], attention=r'layers\.\d+\.attn\.attn', count=6))
    attn = replaced['layers.0.attn.attn']
    assert isinstance(attn, DiTASKMultiheadAttention) and attn.in_proj.num_splits == 3
    assert 'layers.0.attn.attn.in_proj_weight' in model.state_dict()
    assert 'layers.0.attn.attn.in_proj.weight' not in model.state_dict()


def test_mmpretrain_vision_transformer():
    from mmpretrain.models import VisionTransformer
    torch.manual_seed(0)
    model = VisionTransformer(arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
                              img_size=32, patch_size=8, out_indices=[-1], drop_path_rate=0.0)
    replaced = check_adapted(model, torch.randn(2, 3, 32, 32),
                             dict(linear=[r'layers\.\d+\.attn\.(qkv|proj)', FFN], count=8))
    assert replaced['layers.1.attn.qkv'].num_splits == 3


def test_mmpretrain_dinov2_arch():
    from mmpretrain.models import VisionTransformer
    torch.manual_seed(0)
    model = VisionTransformer(arch='dinov2-s', img_size=28, patch_size=14, out_indices=[-1], drop_path_rate=0.0,
                              layer_scale_init_value=1e-5)  # as mmpretrain's DINOv2 configs
    assert any('gamma' in n for n, _ in model.named_parameters())  # DINOv2's layer scale
    replaced = check_adapted(model, torch.randn(1, 3, 28, 28),
                             dict(linear=[r'layers\.\d+\.attn\.(qkv|proj)', FFN], count=4 * 12))
    assert isinstance(replaced['layers.11.ffn.layers.1'], DiTASKLinear)


def test_swin_b_config_inherits_swin_t_and_runs():
    cfg = resolve_tasks(Config.fromfile(str(REPO / 'configs/ditask/swin-b_pascal-mtl.py')))
    assert cfg.model.backbone.arch == 'base' and cfg.model.backbone.adapter.theta_init == 'kaiming'
    assert cfg.model.backbone.init_cfg.checkpoint.endswith('swin_base_patch4_window7_224_22k.pth')
    init_default_scope('ditask_mm')
    segmentor = MODELS.build(cfg.model)  # not init_weights(): that would download the weights
    assert segmentor.decode_heads['sal'].in_channels == (256, 512, 1024, 1024)  # taken from the backbone
    model = segmentor.backbone
    layers = dict(adapter_layers(model))
    assert len(layers) == 4 * 24 and layers['stages.2.blocks.17.ffn.layers.1'].tasks
    assert model.stages[3].blocks[0].attn.w_msa.qkv.in_features == 1024
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs['normals']] == [(256, 8, 8), (512, 4, 4), (1024, 2, 2), (1024, 2, 2)]


def test_attention_adapter_rejects_what_it_cannot_wrap():
    with pytest.raises(TypeError, match='wraps nn.MultiheadAttention'):
        DiTASKMultiheadAttention(nn.Linear(4, 4))
    with pytest.raises(ValueError, match='kdim/vdim'):
        DiTASKMultiheadAttention(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))
