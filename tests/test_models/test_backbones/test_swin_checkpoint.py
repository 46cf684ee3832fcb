"""Pretrained Swin checkpoints (official / timm / mmpretrain / mmseg) -> mmseg names.

The channel orders are proven numerically: a reference implementation (timm,
mmpretrain, or timm fed through timm's own ``checkpoint_filter_fn`` for the
official layout) and mmseg's ``SwinTransformer`` loaded through our converter
must give the same per-stage features. Float64 keeps the tolerance at 1e-9.

Stage 4 at 224 px: the official/timm/mmpretrain code stops shifting windows
when the map (7x7) is not larger than the window, mmseg always shifts, so the
last stage is compared at 448 px only (14x14 map), where all four agree.
"""
import importlib.util
import logging
import math
import os.path as osp
import uuid

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from torch import nn

from ditask_mm.models.backbones.swin_checkpoint import (convert_swin_state_dict,
                                                        detect_swin_format,
                                                        load_pretrained_swin,
                                                        resize_relative_position_tables,
                                                        unfold_merge_index)
from ditask_mm.models.backbones.swin_checkpoint_checks import read_pretrained_tensors
from .swin_checkpoints import (SWIN_NANO, SWIN_T, build_mmpretrain, build_mmseg, build_timm,
                               make_mmpretrain_checkpoint, make_mmseg_checkpoint,
                               make_official_checkpoint, make_timm_state_dict, randomize_,
                               save_checkpoint)

FORMATS = ('official', 'timm', 'mmseg', 'mmpretrain')
# mmseg Swin-T: 189 entries - 12 relative_position_index buffers = 177 weights;
# official/timm/mmpretrain-classifier files cannot provide norm0..norm2 (6).
SWIN_T_EXPECTED = {'official': 171, 'timm': 171, 'mmpretrain': 171, 'mmseg': 177}


def make_checkpoint(fmt, arch=SWIN_T, seed=0):
    if fmt == 'official':
        return make_official_checkpoint(arch, seed=seed)
    if fmt == 'timm':
        return make_timm_state_dict(arch, seed=seed)
    if fmt == 'mmseg':
        return make_mmseg_checkpoint(arch, seed=seed)
    return make_mmpretrain_checkpoint(arch, seed=seed)


@pytest.fixture(scope='module')
def swin_t_checkpoints():
    return {fmt: make_checkpoint(fmt) for fmt in FORMATS}


def flat(ckpt):
    return dict(ckpt.get('model', ckpt.get('state_dict', ckpt)))


def mmseg_model(arch, seed=123, **kwargs):
    """mmseg Swin with every weight random (so norm0..2 are not the identity)."""
    model = randomize_(build_mmseg(arch, **kwargs), seed)
    model.eval()  # mmseg's train() returns None: no chaining
    return model


# ------------------------------------------------------------------ reading
def test_generated_official_layout_matches_timm_filter(swin_t_checkpoints):
    """timm's own filter loads our hand-built official file with nothing left over."""
    from timm.models.swin_transformer import checkpoint_filter_fn
    sd = swin_t_checkpoints['official']['model']
    assert len(sd) == 190
    masks = {k: tuple(v.shape) for k, v in sd.items() if k.endswith('attn_mask')}
    assert masks == {'layers.0.blocks.1.attn_mask': (64, 49, 49),
                     'layers.1.blocks.1.attn_mask': (16, 49, 49),
                     'layers.2.blocks.1.attn_mask': (4, 49, 49),
                     'layers.2.blocks.3.attn_mask': (4, 49, 49),
                     'layers.2.blocks.5.attn_mask': (4, 49, 49)}
    assert sd['head.weight'].shape == (21841, 768)
    timm_model = build_timm(SWIN_T, num_classes=21841, weight_init='skip')
    result = timm_model.load_state_dict(checkpoint_filter_fn(sd, timm_model), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_generated_timm_layout_matches_create_model(swin_t_checkpoints):
    import timm
    ref = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False).state_dict()
    ours = swin_t_checkpoints['timm']
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}
    assert 'layers.1.downsample.reduction.weight' in ours
    assert not any(k.startswith('layers.0.downsample') for k in ours)


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('prefix', ['', 'backbone.', 'module.backbone.'])
def test_detect_format(swin_t_checkpoints, fmt, prefix):
    sd = flat(swin_t_checkpoints[fmt])
    if fmt in ('mmseg', 'mmpretrain'):  # full-model files: backbone.* + heads
        backbone = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
        others = {k: v for k, v in sd.items() if not k.startswith('backbone.')}
        sd = ({**{prefix + k: v for k, v in backbone.items()}, **others} if prefix else backbone)
    else:
        sd = {prefix + k: v for k, v in sd.items()}
    assert detect_swin_format(sd) == fmt


def test_detect_accepts_containers(swin_t_checkpoints):
    for fmt in FORMATS:
        assert detect_swin_format(swin_t_checkpoints[fmt]) == fmt
    assert detect_swin_format({'state_dict': {'model': swin_t_checkpoints['timm']}}) == 'timm'


@pytest.mark.parametrize('sd', [
    {'conv1.weight': torch.zeros(64, 3, 7, 7), 'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1),
     'fc.weight': torch.zeros(10, 64)},
    {'blocks.0.attn.qkv.weight': torch.zeros(9, 3), 'cls_token': torch.zeros(1, 1, 3)},
], ids=['resnet', 'vit'])
def test_detect_rejects_non_swin(sd):
    with pytest.raises(ValueError, match=r'not a Swin.*' + list(sd)[0].replace('.', r'\.')):
        detect_swin_format(sd)


def test_read_rejects_empty_and_missing_files(tmp_path):
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match='empty.pth'):
        read_pretrained_tensors(str(empty))
    for name, obj in (('nothing.pth', {}), ('meta_only.pth', {'meta': {'iter': 3}})):
        with pytest.raises(ValueError, match=name):
            read_pretrained_tensors(save_checkpoint(obj, tmp_path / name))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        read_pretrained_tensors(str(tmp_path / 'nope.pth'))


def test_read_urls_through_mmengine(monkeypatch):
    from mmengine.runner import CheckpointLoader
    calls = []

    def fake_load(filename, map_location=None, logger=None):
        calls.append((filename, map_location))
        return {'state_dict': {'backbone.w': torch.ones(1)}, 'meta': {}}

    monkeypatch.setattr(CheckpointLoader, 'load_checkpoint', fake_load)
    sd = read_pretrained_tensors('https://example.org/swin.pth')
    assert calls == [('https://example.org/swin.pth', 'cpu')] and list(sd) == ['backbone.w']


@pytest.mark.parametrize('fmt,suffix', [('official', '.pth'), ('timm', '.pth'),
                                        ('timm', '.safetensors'), ('mmseg', '.pth'),
                                        ('mmpretrain', '.pth')])
def test_read_and_detect_files(tmp_path, fmt, suffix):
    ckpt = make_checkpoint(fmt, SWIN_NANO)
    path = save_checkpoint(ckpt, tmp_path / f'{fmt}{suffix}')
    sd = read_pretrained_tensors(path)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert sd.keys() == flat(ckpt).keys()
    assert detect_swin_format(sd) == fmt
    wrapped = save_checkpoint({'model': {'module': flat(ckpt)}}, tmp_path / 'nested.pth')
    assert read_pretrained_tensors(wrapped).keys() == flat(ckpt).keys()


# ------------------------------------------------------------- PatchMerging
def test_unfold_merge_index_matches_official_concat():
    """nn.Unfold column c*4+p equals official column idx[c*4+p] on real data."""
    C, x = 5, torch.randn(2, 6, 8, 5)  # B, H, W, C
    official = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2],
                          x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    unfold = nn.Unfold(kernel_size=2, stride=2)(x.permute(0, 3, 1, 2)).transpose(1, 2)
    idx = unfold_merge_index(C)
    assert torch.equal(unfold, official.flatten(1, 2)[..., idx])
    assert idx[:8].tolist() == [0, 2 * C, C, 3 * C, 1, 2 * C + 1, C + 1, 3 * C + 1]


def test_patch_merging_module_equivalence():
    from mmseg.models.utils.embed import PatchMerging as MMSegMerging
    from timm.models.swin_transformer import PatchMerging as TimmMerging
    C = 8
    ref = randomize_(TimmMerging(C), 1)
    conv, _ = convert_swin_state_dict(
        {f'layers.1.downsample.{k}': v for k, v in ref.state_dict().items()}, fmt='timm')
    ours = MMSegMerging(C, 2 * C)
    ours.load_state_dict({k[len('stages.0.downsample.'):]: v for k, v in conv.items()})
    x = torch.randn(2, 6, 10, C)
    y, size = ours(x.flatten(1, 2), (6, 10))
    assert size == (3, 5)
    torch.testing.assert_close(y, ref(x).flatten(1, 2), atol=1e-6, rtol=1e-5)


def test_official_conversion_agrees_with_mmseg_swin2mmseg(swin_t_checkpoints):
    import mmseg
    path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'model_converters',
                    'swin2mmseg.py')
    if not osp.isfile(path):
        pytest.skip('mmseg tools not installed')
    spec = importlib.util.spec_from_file_location('_swin2mmseg', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sd = swin_t_checkpoints['official']['model']
    theirs = module.convert_swin(sd)
    ours, fmt = convert_swin_state_dict(sd)
    assert fmt == 'official'
    assert set(ours) == {('norm3' + k[4:] if k.startswith('norm.') else k) for k in theirs
                         if not k.endswith(('relative_position_index', 'attn_mask'))}
    for key, value in ours.items():
        assert torch.equal(value, theirs['norm' + key[5:] if key.startswith('norm3') else key])


# ---------------------------------------------------- numerical equivalence
def timm_features(model, x):
    """Per-stage NHWC outputs (hooks) and the final normalised features."""
    outs = {}
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o))
             for i, layer in enumerate(model.layers)]
    try:
        final = model.forward_features(x)
    finally:
        for hook in hooks:
            hook.remove()
    return outs, final


def assert_stages_match(mmseg_swin, ref_outs, ref_final, mm_outs, stages):
    """mmseg out i = norm{i}(stage i blocks); the final one uses the checkpoint norm."""
    last = len(mm_outs) - 1
    for i in stages:
        if i == last:
            expected = ref_final
        else:
            norm = getattr(mmseg_swin, f'norm{i}')
            expected = F.layer_norm(ref_outs[i], norm.normalized_shape, norm.weight, norm.bias,
                                    norm.eps)
        torch.testing.assert_close(mm_outs[i], expected.permute(0, 3, 1, 2), atol=1e-9,
                                   rtol=1e-9, msg=lambda m, i=i: f'stage {i}: {m}')


CASES = [pytest.param(SWIN_T, 224, (0, 1, 2), id='swin_t-224'),
         pytest.param(SWIN_NANO, 448, (0, 1, 2, 3), id='nano-448')]


@pytest.mark.parametrize('arch,size,stages', CASES)
@pytest.mark.parametrize('fmt', ['timm', 'official'])
def test_features_match_timm(fmt, arch, size, stages):
    from timm.models.swin_transformer import checkpoint_filter_fn
    ref = build_timm(arch, img_size=size, num_classes=0, weight_init='skip')
    if fmt == 'timm':
        ckpt = dict(randomize_(build_timm(arch, weight_init='skip'), 7).state_dict())
    else:  # oracle: timm's own conversion of the official layout
        ckpt = make_official_checkpoint(arch, seed=7)
    ref_sd = {k: v for k, v in checkpoint_filter_fn(ckpt, ref).items() if not k.startswith('head')}
    ref.load_state_dict(ref_sd, strict=True)
    ours = mmseg_model(arch)
    report = load_pretrained_swin(ours, ckpt)
    assert report['format'] == fmt and report['missing'] == [] and report['fraction'] == 1.0
    ref.double().eval()
    ours.double()
    x = torch.randn(1, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref_outs, ref_final = timm_features(ref, x)
        assert_stages_match(ours, ref_outs, ref_final, ours(x), stages)


@pytest.mark.parametrize('arch,size,stages', CASES)
def test_features_match_mmpretrain(arch, size, stages):
    ref = randomize_(build_mmpretrain(arch, out_indices=(0, 1, 2, 3)), 5)
    ckpt = {'state_dict': {f'backbone.{k}': v for k, v in ref.state_dict().items()}}
    ckpt['state_dict']['head.fc.weight'] = torch.zeros(10, arch.dims(3))
    ours = mmseg_model(arch)
    report = load_pretrained_swin(ours, ckpt)
    assert report['format'] == 'mmpretrain' and report['unexpected'] == []
    assert report['missing'] == [] and report['fraction'] == 1.0
    ref.double().eval()
    ours.double()
    x = torch.randn(1, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(ours(x), ref(x))):
            if i in stages:
                torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


# ------------------------------------------------------------ window change
def bicubic_matrix(n_in, n_out, a=-0.75):
    """1-D bicubic resampling (Keys kernel, half-pixel centres, clamped taps)."""
    def kernel(d):
        d = abs(d)
        if d <= 1:
            return (a + 2) * d ** 3 - (a + 3) * d ** 2 + 1
        return a * d ** 3 - 5 * a * d ** 2 + 8 * a * d - 4 * a if d < 2 else 0.0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        base = math.floor(src)
        for tap in range(base - 1, base + 3):
            m[i, min(max(tap, 0), n_in - 1)] += kernel(src - tap)
    return m


def test_window_7_to_12_resizes_tables(tmp_path):
    ckpt = make_official_checkpoint(SWIN_NANO, seed=3)
    path = save_checkpoint(ckpt, tmp_path / 'swin_nano_window7.pth')
    model = build_mmseg(SWIN_NANO, window_size=12)
    fresh_index = model.stages[0].blocks[0].attn.w_msa.relative_position_index.clone()
    report = load_pretrained_swin(model, path)
    tables = [k for k in model.state_dict() if k.endswith('relative_position_bias_table')]
    assert sorted(report['resized']) == sorted(tables) and len(tables) == sum(SWIN_NANO.depths)
    assert report['missing'] == [] and report['unexpected'] == []
    converted, _ = convert_swin_state_dict(read_pretrained_tensors(path))
    assert not any(k.endswith(('relative_position_index', 'attn_mask')) for k in converted)
    attn = model.stages[2].blocks[1].attn.w_msa
    assert attn.relative_position_bias_table.shape == (529, SWIN_NANO.num_heads[2])
    assert torch.equal(model.stages[0].blocks[0].attn.w_msa.relative_position_index, fresh_index)
    src = ckpt['model']['layers.2.blocks.1.attn.relative_position_bias_table'][:, 1]
    m = bicubic_matrix(13, 23)
    expected = (m @ src.double().reshape(13, 13) @ m.t()).reshape(-1)
    torch.testing.assert_close(attn.relative_position_bias_table[:, 1].double(), expected,
                               atol=1e-5, rtol=1e-5)
    # the same function on its own reports only what it changed
    again = dict(converted)
    assert resize_relative_position_tables(again, model.state_dict()) == report['resized']
    assert resize_relative_position_tables(again, model.state_dict()) == []
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 224, 224))
    assert [o.shape[1:] for o in outs] == [(16, 56, 56), (32, 28, 28), (64, 14, 14), (128, 7, 7)]


# ----------------------------------------------------------- load & report
class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def logger():
    log = MMLogger.get_instance(f'swin_ckpt_{uuid.uuid4().hex}')
    handler = _Records()
    log.addHandler(handler)
    log.records = handler.records
    return log


@pytest.mark.parametrize('fmt', FORMATS)
def test_full_swin_t_checkpoint_loads_with_one_summary_line(swin_t_checkpoints, logger, fmt):
    model = build_mmseg(SWIN_T)
    report = load_pretrained_swin(model, swin_t_checkpoints[fmt], logger=logger)
    n = SWIN_T_EXPECTED[fmt]
    assert report['format'] == fmt and report['fraction'] == 1.0
    assert len(report['loaded']) == n and report['missing'] == [] and report['unexpected'] == []
    assert report['resized'] == []
    assert len(logger.records) == 1
    message = logger.records[0].getMessage()
    assert f'({fmt})' in message and f'loaded {n}/{n}' in message
    assert 'missing 0' in message and 'unexpected 0' in message
    assert f'out-norms at init {0 if fmt == "mmseg" else 6}' in message
    converted, _ = convert_swin_state_dict(swin_t_checkpoints[fmt])
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in converted.items())


def test_too_few_weights_raises_naming_file_and_format(tmp_path, logger):
    sd = make_timm_state_dict(SWIN_NANO)
    partial = {k: v for k, v in sd.items() if not k.startswith('layers.3.')}
    path = save_checkpoint(partial, tmp_path / 'partial_timm.pth')
    model = build_mmseg(SWIN_NANO)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match=r'partial_timm\.pth.*timm.*expected at least 95%.*'
                                           r'stages\.3\.'):
        load_pretrained_swin(model, path, logger=logger)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched
    assert len(logger.records) == 1  # the summary is still logged
    assert 'missing' in logger.records[0].getMessage()
    # a small hole is tolerated but reported
    minor = {k: v for k, v in sd.items() if 'layers.0.blocks.0.norm1' not in k}
    report = load_pretrained_swin(build_mmseg(SWIN_NANO), minor, logger=logger)
    assert report['missing'] == ['stages.0.blocks.0.norm1.weight', 'stages.0.blocks.0.norm1.bias']
    assert 0.95 < report['fraction'] < 1.0
    assert 'missing 2 [stages.0.blocks.0.norm1.weight' in logger.records[-1].getMessage()


def test_shape_mismatch_raises_naming_key(tmp_path):
    sd = make_timm_state_dict(SWIN_NANO)
    sd['layers.0.blocks.0.mlp.fc1.weight'] = torch.zeros(7, 16)
    path = save_checkpoint(sd, tmp_path / 'bad_shape.safetensors')
    with pytest.raises(RuntimeError, match=r'bad_shape\.safetensors.*'
                                           r'stages\.0\.blocks\.0\.ffn\.layers\.0\.0\.weight'
                                           r".*\(7, 16\).*\(64, 16\)"):
        load_pretrained_swin(build_mmseg(SWIN_NANO), path)


def test_adapter_keys_are_not_missing(logger):
    model = build_mmseg(SWIN_NANO)
    qkv = model.stages[0].blocks[0].attn.w_msa.qkv
    qkv.theta_shared = nn.Parameter(torch.full((3,), 0.5))
    qkv.theta_tasks = nn.ParameterDict({'semseg': nn.Parameter(torch.ones(3))})
    fc1 = model.stages[1].blocks[1].ffn.layers[0][0]
    fc1.lora_A = nn.Parameter(torch.ones(2, 32))
    fc1.lora_B = nn.Parameter(torch.zeros(128, 2))
    adapters = [k for k in model.state_dict() if 'theta_' in k or 'lora_' in k]
    assert len(adapters) == 4
    report = load_pretrained_swin(model, make_mmseg_checkpoint(SWIN_NANO), logger=logger)
    assert report['missing'] == [] and report['fraction'] == 1.0
    assert not set(adapters) & set(report['loaded'])
    assert torch.equal(qkv.theta_shared, torch.full((3,), 0.5))
    assert 'missing 0' in logger.records[0].getMessage()
