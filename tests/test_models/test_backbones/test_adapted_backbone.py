"""AdaptedBackbone: DiTASK on mmseg's ViT and mmpretrain's DINOv2 by config, weights, trainable policy, training."""
import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope

import ditask_mm.models  # noqa: F401
from ditask_mm.adapters import DiTASKLinear, adapter_layers
from ditask_mm.datasets.synthetic import generate
from ditask_mm.engine import resolve_tasks
from ditask_mm.registry import MODELS

from ...test_tools.cli_utils import evaluate, metrics, scalars, train, weights

REPO = Path(__file__).resolve().parents[3]
FFN = r'layers\.\d+\.ffn\.layers\.(0\.0|1)'
MMSEG_VIT = dict(type='mmseg.VisionTransformer', img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=2,
                 num_heads=2, out_indices=(0, 1), drop_path_rate=0.0)
MMSEG_ADAPTER = dict(adapter=dict(type='DiTASKLinear', tessellation_size=8),
                     target_modules=[r'layers\.\d+\.attn\.attn', FFN],
                     overrides=[dict(pattern=r'layers\.\d+\.attn\.attn', type='DiTASKMultiheadAttention')])
DINOV2_TINY = dict(type='mmpretrain.VisionTransformer',
                   arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64), img_size=28,
                   patch_size=14, layer_scale_init_value=0.5, out_type='featmap', out_indices=(0, 1),
                   drop_path_rate=0.0)
DINOV2_ADAPTER = dict(adapter=dict(type='DiTASKLinear', tessellation_size=8),
                      target_modules=[r'layers\.\d+\.attn\.(qkv|proj)', FFN],
                      overrides=[dict(pattern=r'.*\.qkv', num_splits=3)])


def build(cfg):
    init_default_scope('ditask_mm')
    return MODELS.build(copy.deepcopy(cfg))


def wrapper_cfg(inner, adapters, **kwargs):
    return dict(type='AdaptedBackbone', backbone=inner, **adapters, **kwargs)


def random_pretrained(model: nn.Module, path: Path, prefix: str = '', seed: int = 7) -> dict:
    """Save a "pretrained" file for ``model`` whose values differ from any default init."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: 0.1 * torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()
             if v.is_floating_point()}
    torch.save({'state_dict': {prefix + k: v for k, v in state.items()}}, path)
    return state


def theta_keys(model):
    return {f'{name}.{p}' for name, layer in adapter_layers(model) for p, _ in layer.adapter_parameters()}


# ---------------------------------------------------------------------------------------------- unit tests
def test_patterns_that_match_nothing_name_the_backbones_linear_layers():
    with pytest.raises(ValueError, match=r"match no module of VisionTransformer.*'layers\.0\.attn\.qkv'"):
        build(wrapper_cfg(DINOV2_TINY, dict(DINOV2_ADAPTER, target_modules=[r'blocks\.\d+\.mlp\.fc1'])))
    with pytest.raises(ValueError, match='init_cfg belongs to the inner backbone'):
        build(wrapper_cfg(MMSEG_VIT, MMSEG_ADAPTER, init_cfg=dict(type='Pretrained', checkpoint='x.pth')))
    with pytest.raises(KeyError, match='unknown trainable policy'):
        build(wrapper_cfg(MMSEG_VIT, MMSEG_ADAPTER, trainable='norms'))
    with pytest.raises(ValueError, match='match no parameter'):
        build(wrapper_cfg(MMSEG_VIT, MMSEG_ADAPTER, trainable=[r'relative_position_bias_table']))
    with pytest.raises(ValueError, match=r"overrides\[0\] .* set tasks, but the wrapper adapts with shared"):
        build(wrapper_cfg(DINOV2_TINY, dict(DINOV2_ADAPTER, overrides=[dict(pattern='.*', tasks=['sal'])])))
    with pytest.raises(KeyError, match="'mmseg.NoSuchViT' is not registered"):
        build(wrapper_cfg(dict(MMSEG_VIT, type='mmseg.NoSuchViT'), MMSEG_ADAPTER))


@pytest.mark.parametrize('inner,adapters,count', [(MMSEG_VIT, MMSEG_ADAPTER, 8), (DINOV2_TINY, DINOV2_ADAPTER, 8)],
                         ids=['mmseg-vit', 'mmpretrain-dinov2'])
def test_zero_theta_reproduces_the_plain_backbone(inner, adapters, count):
    torch.manual_seed(0)
    model = build(wrapper_cfg(inner, adapters))
    torch.manual_seed(0)
    plain = build(inner)
    assert len(dict(adapter_layers(model))) == count
    assert all(isinstance(layer, DiTASKLinear) for _, layer in adapter_layers(model))
    assert model.out_channels == [32, 32]
    x = torch.randn(2, 3, *inner['img_size']) if isinstance(inner['img_size'], tuple) else torch.randn(2, 3, 28, 28)
    model.eval()
    plain.eval()
    with torch.no_grad():
        outs, ref = model(x), plain(x)
        assert isinstance(outs, tuple) and len(outs) == 2 and outs[0].dim() == 4
        for out, expected in zip(outs, ref):
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
        # state-dict keys: the plain backbone's (under backbone.) plus θ
        assert set(model.state_dict()) == {f'backbone.{k}' for k in plain.state_dict()} | {
            f'backbone.{k}' for k in theta_keys(model.backbone)}
        for _, layer in adapter_layers(model):
            layer.theta_shared.normal_(0, 0.5)
        assert (model(x)[-1] - ref[-1]).abs().max() > 1e-3


def test_trainable_policies():
    model = build(wrapper_cfg(DINOV2_TINY, DINOV2_ADAPTER))  # default: the adapters only
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f'backbone.{k}' for k in theta_keys(model.backbone)}
    model = build(wrapper_cfg(DINOV2_TINY, DINOV2_ADAPTER, trainable='adapters_norms'))
    norms = {f'backbone.{n}.{p}' for n, m in model.backbone.named_modules() if isinstance(m, nn.LayerNorm)
             for p, _ in m.named_parameters(recurse=False)}
    assert len(norms) == 2 * 5  # ln1, ln2 of 2 blocks and the final ln1
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == norms | {f'backbone.{k}' for k in theta_keys(model.backbone)}
    model = build(wrapper_cfg(DINOV2_TINY, DINOV2_ADAPTER, trainable=[r'\.gamma\d\.']))  # DINOv2's layer scale
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad and 'theta' not in n) == [
        f'backbone.layers.{i}.{part}.weight' for i in range(2) for part in ('attn.gamma1', 'ffn.gamma2')]
    model = build(wrapper_cfg(DINOV2_TINY, DINOV2_ADAPTER, trainable='all'))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f'backbone.{name}.{p}' for name, _ in adapter_layers(model.backbone) for p in ('weight', 'bias')}


def test_init_weights_with_a_pretrained_file_refreshes_the_svd_caches(tmp_path):
    torch.manual_seed(0)
    plain = build(MMSEG_VIT)
    state = random_pretrained(plain, tmp_path / 'vit.pth')
    inner = dict(MMSEG_VIT, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'vit.pth')))
    model = build(wrapper_cfg(inner, MMSEG_ADAPTER, trainable='adapters_norms'))
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        before = model(x)[-1]  # the caches now hold the SVD of the construction-time weights
    model.init_weights()
    plain = build(inner)
    plain.init_weights()
    plain.eval()
    with torch.no_grad():
        after, expected = model(x)[-1], plain(x)[-1]
    assert (after - before).abs().max() > 1e-2  # the load changed the model...
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-4)  # ...to the plain backbone loaded so
    layer = model.backbone.layers[1].ffn.layers[1]
    torch.testing.assert_close(layer.svd.S[0], torch.linalg.svdvals(state['layers.1.ffn.layers.1.weight']))
    for key, value in model.backbone.state_dict().items():
        if key in state:
            assert torch.equal(value, state[key]), key
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert 'backbone.layers.0.ln1.weight' in trainable and 'backbone.patch_embed.projection.weight' not in trainable


def test_init_without_pretrained_initialises_as_the_plain_backbone():
    """The inner init_weights sees its own nn.Linear layers (mmseg's ViT trunc-normal-initialises them)."""
    torch.manual_seed(0)
    model = build(wrapper_cfg(MMSEG_VIT, MMSEG_ADAPTER))
    torch.manual_seed(0)
    plain = build(MMSEG_VIT)
    torch.manual_seed(1)
    model.init_weights()
    torch.manual_seed(1)
    plain.init_weights()
    for key, value in plain.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    assert all(isinstance(layer, DiTASKLinear) for _, layer in adapter_layers(model))  # adapters back in place
    assert len(dict(adapter_layers(model))) == 8


def test_a_pretrained_file_of_another_key_format_is_refused(tmp_path):
    timm_style = {'blocks.0.attn.qkv.weight': torch.randn(96, 32), 'patch_embed.proj.weight': torch.randn(32, 3, 8, 8)}
    torch.save(timm_style, tmp_path / 'timm.pth')
    inner = dict(MMSEG_VIT, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'timm.pth')))
    model = build(wrapper_cfg(inner, MMSEG_ADAPTER))
    with pytest.raises(ValueError, match=r'wrote only 0 of the .*vit2mmseg'):
        model.init_weights()


def test_outputs_that_are_not_maps_are_refused():
    model = build(wrapper_cfg(dict(DINOV2_TINY, out_type='cls_token'), DINOV2_ADAPTER))
    with pytest.raises(TypeError, match="out_type='featmap'"):
        model(torch.randn(1, 3, 28, 28))
    assert build(wrapper_cfg(DINOV2_TINY, DINOV2_ADAPTER, out_channels=[8, 16])).out_channels == [8, 16]


# ------------------------------------------------------------------------------------------ shipped configs
#: Per shipped config: the tiny inner backbone, the image size, and the prefix of its pretrained file's keys.
TINY_MODELS = {
    'vit-b_pascal-mtl.py': dict(
        inner="dict(embed_dims=32, num_layers=4, num_heads=2, out_indices=(0, 1, 2, 3), drop_path_rate=0.0, "
              "img_size=(64, 64))", size=64, divisor=32, prefix=''),
    'dinov2-s_pascal-mtl.py': dict(
        inner="dict(arch=dict(_delete_=True, embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64), "
              "out_indices=(0, 1, 2, 3), drop_path_rate=0.0, img_size=56)", size=56, divisor=14, prefix='backbone.'),
}
TINY_CONFIG = """
_base_ = ['{base}']
data_root = '{data}'
img_size = ({size}, {size})
model = dict(data_preprocessor=dict(size_divisor={divisor}),
             backbone=dict(backbone=dict(**{inner}, init_cfg=dict(checkpoint='{checkpoint}'))),
             neck=dict(in_channels=[32] * 4, out_channels=16),
             decode_head=dict(in_channels=[16] * 4, projection_channels=(4, 4, 4, 4)))
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadMultiTaskAnnotations'), dict(type='RandomFlipMTL', prob=0.5),
    dict(type='FixedResizeMTL', size=img_size), dict(type='AddIgnoreRegions'), dict(type='PackMultiTaskInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadMultiTaskAnnotations'),
    dict(type='FixedResizeMTL', size=img_size, eval_at_resized=True), dict(type='AddIgnoreRegions'),
    dict(type='PackMultiTaskInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=5.0))
auto_scale_lr = dict(enable=False, base_batch_size=512)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0, end=1)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
"""


def load_config(path) -> Config:
    cfg = Config.fromfile(str(path))
    resolve_tasks(cfg)
    return cfg


def tiny_setup(tmp_path: Path, name: str, data: Path):
    """A tiny config inheriting the shipped one, and its "pretrained" inner-backbone file."""
    spec = TINY_MODELS[name]
    checkpoint = tmp_path / 'pretrained.pth'
    config = tmp_path / f'tiny_{name}'
    config.write_text(TINY_CONFIG.format(base=REPO / 'configs/ditask' / name, data=data, checkpoint=checkpoint,
                                         **spec))
    cfg = load_config(config)
    inner = dict(cfg.model.backbone.backbone, init_cfg=None)
    torch.manual_seed(0)
    pretrained = random_pretrained(build(inner), checkpoint, prefix=spec['prefix'])
    return config, cfg, pretrained


@pytest.mark.parametrize('name', sorted(TINY_MODELS))
def test_shipped_config_builds(name, tmp_path):
    cfg = load_config(REPO / 'configs/ditask' / name)
    inner = cfg.model.backbone.backbone
    assert inner.init_cfg.type == 'Pretrained' and inner.init_cfg.checkpoint.endswith('.pth')
    assert cfg.model.backbone.trainable == 'adapters_norms'
    assert inner.img_size in (448, (448, 448)) and 448 % inner.patch_size == 0
    full = build(cfg.model)  # no init_weights: that would read the pretrained file
    assert len(dict(adapter_layers(full.backbone))) == 4 * 12
    assert list(full.tasks) == ['semseg', 'human_parts', 'sal', 'normals']
    channels = full.backbone.out_channels
    assert channels == [768] * 4 if name.startswith('vit-b') else channels == [384] * 4
    assert all(head.in_channels == tuple(channels) for head in full.decode_heads.values())
    config, cfg, _ = tiny_setup(tmp_path, name, tmp_path / 'unused')
    model = build(cfg.model)
    model.eval()
    size = TINY_MODELS[name]['size']
    with torch.no_grad():
        outs = model._forward(torch.randn(1, 3, size, size))
    assert {t: tuple(o.shape) for t, o in outs.items()} == {
        'semseg': (1, 21, size, size), 'human_parts': (1, 7, size, size), 'sal': (1, 1, size, size),
        'normals': (1, 3, size, size)}


@pytest.fixture(scope='module')
def synthetic_pascal(tmp_path_factory):
    data = tmp_path_factory.mktemp('adapted_backbone') / 'PASCAL_MT'
    generate('pascal', str(data), num_train=4, num_val=3, size=(48, 64), seed=2)
    return data


@pytest.mark.parametrize('name', sorted(TINY_MODELS))
def test_shipped_config_trains_from_a_local_pretrained_file(name, tmp_path, synthetic_pascal):
    config, cfg, pretrained = tiny_setup(tmp_path, name, synthetic_pascal)
    work = tmp_path / 'run'
    train(config, work)
    losses = [r['loss'] for r in scalars(work) if 'loss' in r]
    assert losses and all(math.isfinite(v) for v in losses)
    saved = weights(work / 'epoch_1.pth')
    model = build(cfg.model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    prefix = 'backbone.backbone.'
    changed = {prefix + k for k, v in pretrained.items() if not torch.equal(saved[prefix + k], v)}
    # nothing frozen moved, and the frozen weights are the file's: the load happened
    assert changed <= trainable, sorted(changed - trainable)[:5]
    assert any('ln' in k for k in changed)  # the norms train ('adapters_norms')
    thetas = [k for k in saved if 'theta_shared' in k]
    assert len(thetas) == 4 * 4 and all(k in trainable for k in thetas)
    assert any(saved[k].abs().max() > 0 for k in thetas)  # θ started at 0 and moved
    assert trainable - set(saved) == set()
    assert any(k.startswith('neck.') for k in saved) and any(k.startswith('decode_heads.sal.') for k in saved)
    evaluate(config, work / 'epoch_1.pth', tmp_path / 'test')
    scores = metrics(tmp_path / 'test')
    for task in ('semseg', 'human_parts', 'sal', 'normals'):
        task_scores = [v for k, v in scores.items() if k.startswith(f'{task}.')]
        assert task_scores and all(math.isfinite(v) for v in task_scores), (task, scores)
