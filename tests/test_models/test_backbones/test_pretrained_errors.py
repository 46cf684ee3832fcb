"""Pretrained Swin weights that cannot work fail with a message saying why and what to change.

* a checkpoint of another Swin (deeper, wider, shallower, other head counts)
  raises :class:`SwinCheckpointMismatchError` naming the file, the
  architecture found in it and the model's, and the fix;
* legitimate leftovers (classifier heads, the final ``norm``, derived
  buffers, decode heads of segmentor files) and relative-position tables of
  another window still load;
* an unreachable URL or a missing local file names the config key to set.

Every network access goes to loopback (``127.0.0.1:9``, refused at once) or
is patched out.
"""
import os.path as osp
import urllib.error

import pytest
import torch

from ditask_mm.models.backbones import DiTASKSwinTransformer
from ditask_mm.models.backbones.swin_checkpoint import load_pretrained_swin
from ditask_mm.models.backbones.swin_checkpoint_checks import (PretrainedCheckpointNotFoundError,
                                                               PretrainedDownloadError,
                                                               SwinCheckpointMismatchError, read_pretrained_tensors)

from ...test_tools.cli_utils import tiny_config, train
from . import swin_checkpoints
from .swin_checkpoints import (SWIN_NANO, SwinArch, make_mmpretrain_checkpoint, make_mmseg_checkpoint,
                               make_official_checkpoint, make_timm_state_dict, save_checkpoint)

TASKS = ('semseg', 'normals')
CONFIG_KEY = 'model.backbone.init_cfg.checkpoint'
SWIN_S = SwinArch(depths=(2, 2, 18, 2))
NANO_DEEPER = SwinArch(embed_dims=16, depths=(2, 2, 4, 2), num_heads=(1, 2, 2, 4))
NANO_WIDER = SwinArch(embed_dims=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
NANO_OTHER_HEADS = SwinArch(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
OFFLINE_URL = 'https://127.0.0.1:9/swin_tiny_patch4_window7_224_22k.pth'


def arch_dict(arch: SwinArch) -> dict:
    return dict(embed_dims=arch.embed_dims, depths=arch.depths, num_heads=arch.num_heads)


def pretrained_model(checkpoint, arch=SWIN_NANO, **kwargs) -> DiTASKSwinTransformer:
    """A DiTASK backbone (``post_merge``: no output norms) whose init_cfg names ``checkpoint``."""
    kwargs.setdefault('arch', arch_dict(arch) if isinstance(arch, SwinArch) else arch)
    kwargs.setdefault('adapter', dict(tessellation_size=8, task_tessellation_size=4))
    return DiTASKSwinTransformer(TASKS, init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)),
                                 **kwargs)


def init_error(model) -> str:
    """``init_weights()`` must raise the mismatch error and leave the weights alone; its message."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SwinCheckpointMismatchError) as info:
        model.init_weights()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    return str(info.value)


def shape_only_official_checkpoint(arch: SwinArch) -> dict:
    """An official-layout file whose tensors are zero-stride views: real names and shapes, no memory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(swin_checkpoints, 'random_tensor', lambda name, shape, gen: torch.zeros(()).expand(shape))
        return make_official_checkpoint(arch)


# ------------------------------------------------------- another architecture
def test_swin_s_weights_into_swin_t_raise_naming_both_archs_and_the_file(tmp_path):
    path = save_checkpoint(shape_only_official_checkpoint(SWIN_S),
                           tmp_path / 'swin_small_patch4_window7_224_22k.pth')
    message = init_error(pretrained_model(path, arch='tiny', adapter=dict(tessellation_size=4)))
    first, hint = message.split('\n', 1)
    assert f'{path} (official format) does not fit the model' in first
    assert '156 checkpoint tensors have no place in the model [stages.2.blocks.6.norm1.weight' in first
    assert ("found Swin-S (arch='small': embed_dims=96, depths=(2, 2, 18, 2)) in "
            'swin_small_patch4_window7_224_22k.pth') in hint
    assert "the model is Swin-T (arch='tiny': embed_dims=96, depths=(2, 2, 6, 2))" in hint
    assert f"weights of the model's architecture (Swin-T) in `{CONFIG_KEY}`" in hint
    assert "set `model.backbone.arch='small'` to match swin_small_patch4_window7_224_22k.pth" in hint


def test_wider_timm_checkpoint_raises_with_its_dims_and_an_arch_dict_to_set(tmp_path):
    path = save_checkpoint(make_timm_state_dict(NANO_WIDER), tmp_path / 'wide_timm.safetensors')
    message = init_error(pretrained_model(path))
    assert "shape mismatch for 'patch_embed.projection.weight' after conversion: checkpoint (24, 3, 4, 4) " \
           'vs model (16, 3, 4, 4) (and ' in message
    assert 'found embed_dims=24, depths=(2, 2, 2, 2) in wide_timm.safetensors' in message
    assert 'the model is embed_dims=16, depths=(2, 2, 2, 2)' in message
    assert ('`model.backbone.arch=dict(embed_dims=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))` '
            'to match wide_timm.safetensors') in message


def test_deeper_official_checkpoint_raises_even_though_every_model_weight_is_found(tmp_path):
    path = save_checkpoint(make_official_checkpoint(NANO_DEEPER, num_classes=10), tmp_path / 'deeper.pth')
    message = init_error(pretrained_model(path))
    assert '26 checkpoint tensors have no place in the model [stages.2.blocks.2.' in message
    assert 'found embed_dims=16, depths=(2, 2, 4, 2) in deeper.pth' in message
    assert 'the model is embed_dims=16, depths=(2, 2, 2, 2)' in message


def test_shallower_mmpretrain_checkpoint_fails_the_95_percent_rule_with_the_arch_hint(tmp_path):
    path = save_checkpoint(make_mmpretrain_checkpoint(SWIN_NANO), tmp_path / 'shallow_mmpretrain.pth')
    message = init_error(pretrained_model(path, arch=NANO_DEEPER))
    assert 'shallow_mmpretrain.pth (detected format: mmpretrain) provided only' in message
    assert 'expected at least 95%' in message and 'stages.2.blocks.2.' in message
    assert 'found embed_dims=16, depths=(2, 2, 2, 2) in shallow_mmpretrain.pth' in message
    assert 'the model is embed_dims=16, depths=(2, 2, 4, 2)' in message


# --------------------------------------------------------------------- shapes
def test_shape_mismatch_on_a_weight_of_the_same_arch_raises_naming_key_and_settings(tmp_path):
    ckpt = make_official_checkpoint(SWIN_NANO, num_classes=10)
    ckpt['model']['layers.1.blocks.0.mlp.fc2.weight'] = torch.zeros(32, 96)
    path = save_checkpoint(ckpt, tmp_path / 'edited.pth')
    message = init_error(pretrained_model(path))
    assert ("edited.pth (official format) does not fit the model: shape mismatch for "
            "'stages.1.blocks.0.ffn.layers.1.weight' after conversion: checkpoint (32, 96) vs model "
            "(32, 128).") in message
    assert "has the model's architecture (embed_dims=16, depths=(2, 2, 2, 2))" in message
    assert 'mlp_ratio' in message and 'damaged' in message


def test_tables_with_other_head_counts_cannot_be_resized_and_raise(tmp_path):
    path = save_checkpoint(make_official_checkpoint(SWIN_NANO, num_classes=10), tmp_path / 'heads.pth')
    message = init_error(pretrained_model(path, arch=NANO_OTHER_HEADS))
    assert ("shape mismatch for 'stages.2.blocks.0.attn.w_msa.relative_position_bias_table' after "
            'conversion: checkpoint (169, 2) vs model (169, 4) (and 3 more)') in message
    assert 'num_heads' in message


def test_tables_of_another_window_are_resized_and_the_final_norm_is_a_leftover(tmp_path):
    ckpt = make_official_checkpoint(SWIN_NANO, seed=4)
    path = save_checkpoint(ckpt, tmp_path / 'swin_nano_window7.pth')
    model = pretrained_model(path, window_size=4)
    report = load_pretrained_swin(model, path)
    assert len(report['resized']) == sum(SWIN_NANO.depths) and report['fraction'] == 1.0
    assert report['unexpected'] == ['norm3.weight', 'norm3.bias'] and report['missing'] == []
    table = model.stages[1].blocks[0].attn.w_msa.relative_position_bias_table
    assert table.shape == (49, 2)
    assert torch.equal(model.stages[1].blocks[0].attn.w_msa.qkv.weight,
                       ckpt['model']['layers.1.blocks.0.attn.qkv.weight'])
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs['semseg']] == [32, 64, 128, 128]


# ---------------------------------------------------------------- 95 % rule
def test_a_truncated_file_still_fails_the_95_percent_rule_without_an_arch_claim(tmp_path):
    ckpt = make_official_checkpoint(SWIN_NANO, num_classes=10)
    ckpt['model'] = {k: v for k, v in ckpt['model'].items() if not k.startswith('layers.3.')}
    path = save_checkpoint(ckpt, tmp_path / 'truncated.pth')
    message = init_error(pretrained_model(path))
    assert 'truncated.pth (detected format: official) provided only' in message
    assert 'expected at least 95%' in message and 'stages.3.blocks.0.' in message
    assert 'another Swin' not in message  # depths (2, 2, 2, 0): a damaged file, not another arch


@pytest.mark.parametrize('name,make', [
    ('official.pth', make_official_checkpoint),  # head (21841 classes), norm, index/mask buffers
    ('timm.pth', make_timm_state_dict),  # head.fc, norm
    ('mmseg.pth', make_mmseg_checkpoint),  # decode/auxiliary heads, norm0..3
    ('mmpretrain.pth', make_mmpretrain_checkpoint),  # head.fc, norm3
])
def test_real_formats_load_with_their_leftovers(tmp_path, name, make):
    path = save_checkpoint(make(SWIN_NANO), tmp_path / name)
    model = pretrained_model(path)
    report = load_pretrained_swin(model, path)
    assert report['fraction'] == 1.0 and report['missing'] == []
    assert report['unexpected'] and all(k.startswith(('norm0.', 'norm1.', 'norm2.', 'norm3.'))
                                        for k in report['unexpected'])
    model.init_weights()  # the user's path, through init_cfg


# ------------------------------------------------------------ files and URLs
def test_an_unreachable_url_says_where_to_download_and_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))  # no cached copy
    model = pretrained_model(OFFLINE_URL)
    with pytest.raises(PretrainedDownloadError) as info:
        model.init_weights()
    assert str(info.value).startswith(
        f'no network: download swin_tiny_patch4_window7_224_22k.pth from {OFFLINE_URL} and set '
        f'`{CONFIG_KEY}=/path/to/swin_tiny_patch4_window7_224_22k.pth`')
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert isinstance(info.value, ConnectionError)


@pytest.mark.parametrize('error,cause', [
    (urllib.error.HTTPError(OFFLINE_URL, 404, 'Not Found', {}, None), 'download failed (HTTP 404 Not Found)'),
    (TimeoutError('timed out'), 'no network'),
    (ConnectionResetError(104, 'Connection reset by peer'), 'no network'),
    (PermissionError(13, 'Permission denied'), 'download failed (PermissionError)'),  # read-only hub cache
])
def test_other_download_failures_give_the_same_hint(monkeypatch, error, cause):
    from mmengine.runner import CheckpointLoader

    def fail(filename, map_location=None, logger=None):
        raise error

    monkeypatch.setattr(CheckpointLoader, 'load_checkpoint', fail)
    url = 'https://example.org/weights/swin_base_patch4_window12_384_22k.pth?download=1'
    with pytest.raises(PretrainedDownloadError) as info:
        read_pretrained_tensors(url)
    assert str(info.value).startswith(
        f'{cause}: download swin_base_patch4_window12_384_22k.pth from {url} and set '
        f'`{CONFIG_KEY}=/path/to/swin_base_patch4_window12_384_22k.pth`')
    assert info.value.__cause__ is error


def test_a_missing_local_file_names_the_path_and_the_config_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = pretrained_model('weights/swin_tiny.pth')
    with pytest.raises(PretrainedCheckpointNotFoundError) as info:
        model.init_weights()
    message = str(info.value)
    assert "'weights/swin_tiny.pth'" in message and osp.join(str(tmp_path), 'weights/swin_tiny.pth') in message
    assert f'set `{CONFIG_KEY}` to an existing file' in message
    assert isinstance(info.value, FileNotFoundError)


# ----------------------------------------------------------------- end to end
def test_train_py_stops_on_weights_of_another_arch_before_any_checkpoint(tmp_path):
    from ditask_mm.datasets.synthetic import generate
    data = tmp_path / 'PASCAL_MT'
    generate('pascal', str(data), num_train=2, num_val=2, size=(48, 64), seed=1)
    deeper = SwinArch(embed_dims=16, depths=(2, 2, 4, 2), num_heads=(1, 2, 4, 8), window_size=4, img_size=64)
    checkpoint = save_checkpoint(make_official_checkpoint(deeper, num_classes=10), tmp_path / 'swin_deeper.pth')
    config = tiny_config(tmp_path / 'pretrained_other_arch.py', data, pretrained=checkpoint)
    work = tmp_path / 'work'
    proc = train(config, work, '--cfg-options', 'train_cfg.max_epochs=1', check=False)
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'SwinCheckpointMismatchError' in proc.stderr and 'swin_deeper.pth' in proc.stderr
    assert 'found embed_dims=16, depths=(2, 2, 4, 2) in swin_deeper.pth' in proc.stderr
    assert 'the model is embed_dims=16, depths=(2, 2, 2, 2)' in proc.stderr
    assert not list(work.rglob('*.pth')) and not (work / 'last_checkpoint').exists()
