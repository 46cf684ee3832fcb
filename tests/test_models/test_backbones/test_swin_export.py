"""Exporting a plain Swin backbone in the official checkpoint layout (swin_export.py).

The export must be the exact inverse of the official → mmseg conversion: the
official helper file survives convert → export bit for bit, and a trained
backbone survives export → ``init_cfg`` Pretrained load bit for bit.
"""
import pytest
import torch

import ditask_mm.models  # noqa: F401
from ditask_mm.models.backbones import (DiTASKSwinTransformer, MultiTaskSwinTransformer, SwinExportError,
                                        export_official_swin)
from ditask_mm.models.backbones.swin_checkpoint import convert_swin_state_dict, unfold_merge_index
from ditask_mm.models.backbones.swin_export import official_merge_index

from .swin_checkpoints import SWIN_NANO, SWIN_T, make_official_checkpoint, randomize_

TASKS = ('semseg', 'sal')


def arch_dict(arch):
    return dict(embed_dims=arch.embed_dims, depths=arch.depths, num_heads=arch.num_heads)


def plain_backbone(arch=SWIN_NANO, init_cfg=None, seed=0, **kwargs):
    model = MultiTaskSwinTransformer(TASKS, arch=arch_dict(arch), window_size=arch.window_size,
                                     pretrain_img_size=arch.img_size, drop_path_rate=0.0, adapter=None,
                                     trainable='all', init_cfg=init_cfg, **kwargs)
    if init_cfg is None:
        randomize_(model, seed)  # non-default values everywhere, so a wrong key or order shows
    else:
        model.init_weights()
    model.eval()  # mmseg's Swin.train returns None
    return model


def official_without_head(arch):
    return {k: v for k, v in make_official_checkpoint(arch)['model'].items() if not k.startswith('head.')}


def test_merge_index_inverts_the_loaders_permutation():
    for channels in (1, 3, 16):
        idx = unfold_merge_index(channels)
        assert torch.equal(idx[official_merge_index(channels)], torch.arange(4 * channels))
        assert not torch.equal(official_merge_index(channels), torch.arange(4 * channels))


@pytest.mark.parametrize('arch', [SWIN_NANO, SWIN_T], ids=['nano', 'swin-t'])
def test_convert_then_export_gives_back_the_official_file(arch):
    """Key set, shapes and values (reduction columns, merging norm, index and mask buffers) of the original."""
    official = official_without_head(arch)
    converted, fmt = convert_swin_state_dict({'model': official})
    assert fmt == 'official'
    exported = export_official_swin(converted, img_size=arch.img_size, patch_size=arch.patch_size)['model']
    assert sorted(exported) == sorted(official)
    for key, value in official.items():
        assert exported[key].shape == value.shape, key
        assert exported[key].dtype == value.dtype, key
        assert torch.equal(exported[key], value), key
    if arch is SWIN_T:
        assert len(exported) == 188  # the 190 keys of swin_tiny_patch4_window7_224_22k.pth less head.weight/bias


def test_model_export_has_the_official_key_set_and_merging_order():
    model = plain_backbone()
    exported = export_official_swin(model, img_size=SWIN_NANO.img_size)['model']
    official = official_without_head(SWIN_NANO)
    assert {k: tuple(v.shape) for k, v in exported.items()} == {k: tuple(v.shape) for k, v in official.items()}
    # the official PatchMerging order: column q * C + c holds neighbour q = row + 2 * col of channel c
    merge = model.stages[0].downsample
    channels = SWIN_NANO.embed_dims
    official_w = exported['layers.0.downsample.reduction.weight']
    for p, q in enumerate((0, 2, 1, 3)):  # unfold position p = 2 * row + col
        for c in (0, channels - 1):
            assert torch.equal(official_w[:, q * channels + c], merge.reduction.weight[:, c * 4 + p])
    assert torch.equal(exported['layers.0.blocks.1.attn.qkv.weight'], model.stages[0].blocks[1].attn.w_msa.qkv.weight)
    assert torch.equal(exported['layers.3.blocks.0.mlp.fc2.bias'], model.stages[3].blocks[0].ffn.layers[1].bias)
    # post_merge backbones have no output norm: the final norm is the identity
    assert torch.equal(exported['norm.weight'], torch.ones(SWIN_NANO.dims(3)))
    assert torch.equal(exported['norm.bias'], torch.zeros(SWIN_NANO.dims(3)))


def test_pre_merge_backbone_exports_its_last_output_norm():
    model = plain_backbone(out_type='pre_merge')
    exported = export_official_swin(model, img_size=SWIN_NANO.img_size)['model']
    assert torch.equal(exported['norm.weight'], model.norm3.weight)
    assert not any(k.startswith(('norm0', 'norm1', 'norm2')) for k in exported)


def test_export_then_pretrained_load_is_bit_identical(tmp_path):
    source = plain_backbone(seed=3)
    path = tmp_path / 'swin_official.pth'
    torch.save(export_official_swin(source, img_size=SWIN_NANO.img_size), path)
    loaded = plain_backbone(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    src_state, dst_state = source.state_dict(), loaded.state_dict()
    assert sorted(src_state) == sorted(dst_state)
    for key, value in src_state.items():
        assert torch.equal(dst_state[key], value), key
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        out_src, out_dst = source(x), loaded(x)
    for task in TASKS:
        for a, b in zip(out_src[task], out_dst[task]):
            assert torch.equal(a, b)
    # and a DiTASK backbone reads the same file: its frozen linears are the exported weights
    ditask = DiTASKSwinTransformer(TASKS, arch=arch_dict(SWIN_NANO), window_size=SWIN_NANO.window_size,
                                   drop_path_rate=0.0, adapter=dict(tessellation_size=8, task_tessellation_size=4),
                                   init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ditask.init_weights()
    qkv = 'stages.1.blocks.1.attn.w_msa.qkv.weight'
    assert torch.equal(ditask.state_dict()[qkv], source.state_dict()[qkv])
    assert torch.equal(ditask.stages[2].downsample.reduction.weight, source.stages[2].downsample.reduction.weight)


def test_export_refuses_adapters_and_non_swin_input():
    ditask = DiTASKSwinTransformer(TASKS, arch=arch_dict(SWIN_NANO), adapter=dict(tessellation_size=8,
                                                                                  task_tessellation_size=4))
    with pytest.raises(SwinExportError, match='adapter tensors.*theta_'):
        export_official_swin(ditask)
    with pytest.raises(SwinExportError, match='not an mmseg-named Swin backbone'):
        export_official_swin({'conv.weight': torch.zeros(1)})
    with pytest.raises(SwinExportError, match='nn.Module or a state dict'):
        export_official_swin('model.pth')
