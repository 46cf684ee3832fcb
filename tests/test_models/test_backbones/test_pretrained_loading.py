"""Pretrained Swin checkpoints of every format through the multi-task backbone's init_cfg.

With θ = 0 the DiTASK backbone must compute exactly what a plain mmseg
SwinTransformer loaded from the same file computes.
"""
import pytest
import torch
from mmseg.models.backbones import SwinTransformer

import ditask_mm.models  # noqa: F401
from ditask_mm.adapters import DiTASKLinear, adapter_layers
from ditask_mm.models.backbones import DiTASKSwinTransformer
from ditask_mm.models.backbones.swin_checkpoint import load_pretrained_swin
from ditask_mm.models.backbones.window_rule import apply_official_window_rule

from .swin_checkpoints import (SWIN_NANO, SWIN_T, make_mmpretrain_checkpoint, make_mmseg_checkpoint,
                               make_official_checkpoint, make_timm_state_dict, save_checkpoint)

TASKS = ('semseg', 'human_parts', 'sal', 'normals')
MAKERS = {
    'official.pth': make_official_checkpoint,
    'mmseg.pth': make_mmseg_checkpoint,
    'mmpretrain.pth': make_mmpretrain_checkpoint,
    'timm.pth': make_timm_state_dict,
    'timm.safetensors': make_timm_state_dict,
}


def arch_dict(arch):
    return dict(embed_dims=arch.embed_dims, depths=arch.depths, num_heads=arch.num_heads)


def build_pair(arch, path):
    model = DiTASKSwinTransformer(TASKS, arch=arch_dict(arch), window_size=arch.window_size,
                                  pretrain_img_size=224, drop_path_rate=0.0, out_type='pre_merge',
                                  adapter=dict(tessellation_size=8, task_tessellation_size=4),
                                  init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    model.eval()
    plain = SwinTransformer(pretrain_img_size=224, window_size=arch.window_size, drop_path_rate=0.0,
                            out_indices=(0, 1, 2, 3), **arch_dict(arch))
    load_pretrained_swin(plain, path)
    apply_official_window_rule(plain)  # stage 4 is 7x7 at 224: the official rule, which our backbone follows
    plain.eval()
    return model, plain


@pytest.mark.parametrize('name', sorted(MAKERS))
def test_every_format_loads_and_zero_theta_features_equal_plain_mmseg(tmp_path, name):
    path = save_checkpoint(MAKERS[name](SWIN_NANO), str(tmp_path / name))
    model, plain = build_pair(SWIN_NANO, path)
    # the weights really came from the file (not left at their random init)
    assert torch.equal(model.patch_embed.projection.weight, plain.patch_embed.projection.weight)
    qkv = model.stages[2].blocks[1].attn.w_msa.qkv
    assert isinstance(qkv, DiTASKLinear)
    assert torch.equal(qkv.weight, plain.stages[2].blocks[1].attn.w_msa.qkv.weight)
    # the SVD caches describe the loaded weights, not the initial ones
    for _, layer in adapter_layers(model):
        assert not layer.svd.is_stale(layer.weight)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        outs, ref = model(x), plain(x)
    for task in TASKS:
        for out, expected in zip(outs[task], ref):
            torch.testing.assert_close(out, expected, atol=2e-4, rtol=2e-4)


def test_official_swin_t_checkpoint_loads_completely(tmp_path):
    path = save_checkpoint(make_official_checkpoint(SWIN_T), str(tmp_path / 'swin_tiny_patch4_window7_224_22k.pth'))
    model = DiTASKSwinTransformer(TASKS, init_cfg=dict(type='Pretrained', checkpoint=path))
    report = load_pretrained_swin(model, path)
    assert report['format'] == 'official' and report['fraction'] == 1.0 and not report['missing']
    assert model.refresh_svd_caches() == 48


def test_a_checkpoint_covering_too_little_fails_loudly(tmp_path):
    ckpt = make_official_checkpoint(SWIN_NANO)
    ckpt['model'] = {k: v for k, v in ckpt['model'].items() if not k.startswith('layers.2.')}
    path = save_checkpoint(ckpt, str(tmp_path / 'truncated.pth'))
    model = DiTASKSwinTransformer(TASKS, arch=arch_dict(SWIN_NANO), adapter=dict(tessellation_size=8),
                                  init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(RuntimeError, match='truncated.pth'):
        model.init_weights()
