"""Swin blocks on maps that fit in one window follow the official rule.

The official Swin (and timm, and the public DiTASK code) stops shifting and
uses a ``min(H, W)`` window when ``min(H, W) <= window_size``; mmseg always
shifts and pads. The references here are mmseg's own ``ShiftWindowMSA`` with
the shift forced to 0, a plain windowed attention written below, the
official loader's bicubic table resize, and timm's ``SwinTransformer``.
"""
import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from mmseg.models.backbones.swin import ShiftWindowMSA

import ditask_mm.models  # noqa: F401
from ditask_mm.adapters import adapter_layers
from ditask_mm.models.backbones import DiTASKSwinTransformer, window_rule
from ditask_mm.models.backbones.task_branch import branched_block_forward
from ditask_mm.models.backbones.window_rule import (OfficialRuleShiftWindowMSA, relative_position_bias,
                                                    window_and_shift)

from .swin_checkpoints import (SWIN_NANO, SWIN_T, build_timm, make_official_checkpoint,
                               official_relative_position_index, save_checkpoint)

TASKS = ('semseg', 'human_parts', 'sal', 'normals')
TINY = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


# ------------------------------------------------------------------ helpers
def pretrained_swin(arch, path, **kwargs):
    kwargs.setdefault('adapter', dict(tessellation_size=8, task_tessellation_size=4))
    model = DiTASKSwinTransformer(TASKS, arch=dict(embed_dims=arch.embed_dims, depths=arch.depths,
                                                   num_heads=arch.num_heads),
                                  window_size=arch.window_size, drop_path_rate=0.0,
                                  init_cfg=dict(type='Pretrained', checkpoint=path), **kwargs)
    model.init_weights()
    model.eval()
    return model


@contextlib.contextmanager
def mmseg_windows(model):
    """The old behaviour: every attention module back to mmseg's ShiftWindowMSA."""
    modules = [m for m in model.modules() if isinstance(m, OfficialRuleShiftWindowMSA)]
    for module in modules:
        module.__class__ = ShiftWindowMSA
    try:
        yield
    finally:
        for module in modules:
            module.__class__ = OfficialRuleShiftWindowMSA


def stage_inputs(model, x):
    """Run ``model`` on ``x``; return its outputs and each stage's first-block input ``(tokens, hw)``."""
    seen = {}
    hooks = [stage.blocks[0].register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args))
             for i, stage in enumerate(model.stages)]
    try:
        with torch.no_grad():
            outs = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return outs, seen


def rolled_map_sizes(model, x):
    """Sizes ``(H, W)`` of every map ``torch.roll`` (the cyclic shift) sees in a forward."""
    sizes, roll = [], torch.roll

    def spy(tensor, *args, **kwargs):
        sizes.append(tuple(tensor.shape[1:3]))
        return roll(tensor, *args, **kwargs)
    torch.roll = spy
    try:
        with torch.no_grad():
            model(x)
    finally:
        torch.roll = roll
    return sizes


def plain_block(block, shift):
    """A copy of ``block`` as plain mmseg (shared linears, ShiftWindowMSA) with ``shift``."""
    block = copy.deepcopy(block)
    for _, layer in adapter_layers(block):
        layer.tasks = ()
    block.attn.__class__ = ShiftWindowMSA
    block.attn.shift_size = shift
    return block


def official_table(msa, window):
    """The official loader's bicubic resize of the bias table to ``window``, ``((2w-1)², heads)``."""
    table = msa.relative_position_bias_table.detach()
    side, heads = 2 * msa.window_size[0] - 1, table.shape[1]
    grid = table.permute(1, 0).reshape(1, heads, side, side)
    resized = F.interpolate(grid, size=(2 * window - 1, 2 * window - 1), mode='bicubic', align_corners=False)
    return resized.reshape(heads, -1).permute(1, 0)


def official_bias(msa, window):
    """:func:`official_table` read with the official relative position index, ``(heads, N, N)``."""
    table, tokens = official_table(msa, window), window * window
    return table[official_relative_position_index(window).reshape(-1)].view(tokens, tokens, -1).permute(2, 0, 1)


def reference_block(block, x, hw, window, bias):
    """A Swin block without shift, ``window``-sized windows (zero padding as mmseg), given bias."""
    msa = block.attn.w_msa
    B, _, C = x.shape
    H, W = hw
    heads = msa.num_heads
    grid = block.norm1(x).view(B, H, W, C)
    grid = F.pad(grid, (0, 0, 0, -W % window, 0, -H % window))
    Hp, Wp = grid.shape[1:3]
    windows = grid.view(B, Hp // window, window, Wp // window, window, C).permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(-1, window * window, C)
    q, k, v = msa.qkv(windows).view(windows.shape[0], -1, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) * msa.scale + bias, dim=-1)
    out = msa.proj((attn @ v).transpose(1, 2).reshape(windows.shape))
    out = out.view(B, Hp // window, Wp // window, window, window, C).permute(0, 1, 3, 2, 4, 5)
    x = x + out.reshape(B, Hp, Wp, C)[:, :H, :W].reshape(B, H * W, C)
    return block.ffn(block.norm2(x), identity=x)


def relative_difference(a, b):
    return ((a - b).norm() / b.norm()).item()


def timm_swin(arch, size, ckpt, tables=None):
    """timm's Swin built for ``size`` px with the official checkpoint (``tables``: bias tables to use instead)."""
    from timm.models.swin_transformer import checkpoint_filter_fn
    ref = build_timm(arch, img_size=size, num_classes=0, weight_init='skip')
    official = {**ckpt['model'], **(tables or {})}  # tables of the right size: timm's filter keeps them
    sd = {k: v for k, v in checkpoint_filter_fn(official, ref).items() if not k.startswith('head')}
    ref.load_state_dict(sd, strict=True)
    return ref.eval()


# ------------------------------------------------------------- 224 px Swin-T
@pytest.fixture(scope='module')
def swin_t_224(tmp_path_factory):
    ckpt = make_official_checkpoint(SWIN_T, seed=7)
    path = save_checkpoint(ckpt, tmp_path_factory.mktemp('ckpt') / 'swin_tiny_patch4_window7_224_22k.pth')
    model = DiTASKSwinTransformer(TASKS, drop_path_rate=0.0, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    outs, inputs = stage_inputs(model, x)
    with mmseg_windows(model), torch.no_grad():
        old = model(x)
    return dict(ckpt=ckpt, model=model, x=x, outs=outs, old=old, stage4_input=inputs[3])


def test_swin_t_224_stage4_runs_unshifted_and_equals_the_no_shift_computation(swin_t_224):
    model, (tokens, hw) = swin_t_224['model'], swin_t_224['stage4_input']
    assert hw == (7, 7)
    # stage 4 (7x7, window 7): no shift; the earlier stages keep theirs
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            size = (56 // 2 ** i, 56 // 2 ** i)
            expected = (7, 0) if i == 3 else (7, 3 * (j % 2))
            assert window_and_shift(block.attn, size) == expected, (i, j)
    assert (7, 7) not in rolled_map_sizes(model, swin_t_224['x'])
    with mmseg_windows(model):
        assert (7, 7) in rolled_map_sizes(model, swin_t_224['x'])  # the old code shifted stage 4
    # reference: mmseg's own block computation with the shift forced to 0 (and kept at 3 for the old result)
    with torch.no_grad():
        first = plain_block(model.stages[3].blocks[0], shift=0)(tokens, hw)
        unshifted = plain_block(model.stages[3].blocks[1], shift=0)(first, hw)
        shifted = plain_block(model.stages[3].blocks[1], shift=3)(first, hw)
    unshifted, shifted = (t.view(1, 7, 7, -1).permute(0, 3, 1, 2) for t in (unshifted, shifted))
    for task in TASKS:
        torch.testing.assert_close(swin_t_224['outs'][task][3], unshifted, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(swin_t_224['old'][task][3], shifted, atol=1e-4, rtol=1e-4)
    assert relative_difference(shifted, unshifted) > 0.05
    for i in range(3):  # stages 1-3 (and the PatchMerging into stage 4) are untouched
        torch.testing.assert_close(swin_t_224['outs']['sal'][i], swin_t_224['old']['sal'][i], atol=0, rtol=0)


def test_swin_t_224_stage4_now_agrees_with_timm(swin_t_224):
    """timm implements the official rule: with the same weights its stage 4 is ours (and not mmseg's)."""
    ref = timm_swin(SWIN_T, 224, swin_t_224['ckpt'])
    assert ref.layers[3].blocks[1].shift_size == (0, 0) and ref.layers[2].blocks[1].shift_size == (3, 3)
    outs = {}
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o))
             for i, layer in enumerate(ref.layers)]
    try:
        with torch.no_grad():
            ref.forward_features(swin_t_224['x'])
    finally:
        for hook in hooks:
            hook.remove()
    expected = outs[3].permute(0, 3, 1, 2)
    torch.testing.assert_close(swin_t_224['outs']['normals'][3], expected, atol=2e-4, rtol=2e-4)
    assert relative_difference(swin_t_224['old']['normals'][3], expected) > 0.05


# --------------------------------------------------------- 448 px: inactive
def test_448_every_stage_is_larger_than_the_window_and_nothing_changes(tmp_path):
    path = save_checkpoint(make_official_checkpoint(SWIN_NANO, seed=2), tmp_path / 'nano.pth')
    model = pretrained_swin(SWIN_NANO, path, adapter=dict(tessellation_size=8, task_tessellation_size=4,
                                                          theta_init='kaiming'))
    old = pretrained_swin(SWIN_NANO, path, official_window_rule=False,
                          adapter=dict(tessellation_size=8, task_tessellation_size=4, theta_init='kaiming'))
    old.load_state_dict(model.state_dict())
    assert all(type(b.attn) is ShiftWindowMSA for s in old.stages for b in s.blocks)
    x = torch.randn(1, 3, 448, 448)
    outs, inputs = stage_inputs(model, x)
    for i, stage in enumerate(model.stages):
        assert inputs[i][1] == (112 // 2 ** i,) * 2
        for block in stage.blocks:
            assert window_and_shift(block.attn, inputs[i][1]) == (block.attn.window_size, block.attn.shift_size)
    with torch.no_grad():
        expected = old(x)
    for task in TASKS:
        for out, ref in zip(outs[task], expected[task]):
            torch.testing.assert_close(out, ref, atol=0, rtol=0)


# ------------------------------------------------------- sub-window: 128 px
def test_128_px_stage4_uses_a_4x4_window_with_the_bicubically_resized_bias(tmp_path):
    """Stage 4 is 4x4 (< window 7): one 4x4 window, no padded token, the official loader's resized table."""
    ckpt = make_official_checkpoint(SWIN_NANO, seed=4)
    path = save_checkpoint(ckpt, tmp_path / 'nano.pth')
    model = pretrained_swin(SWIN_NANO, path, out_type='pre_merge')
    x = torch.randn(2, 3, 128, 128)
    outs, inputs = stage_inputs(model, x)
    tokens, hw = inputs[3]
    assert hw == (4, 4) and inputs[2][1] == (8, 8)
    blocks = model.stages[3].blocks
    assert [window_and_shift(b.attn, hw) for b in blocks] == [(4, 0), (4, 0)]
    assert [window_and_shift(b.attn, (8, 8)) for b in model.stages[2].blocks] == [(7, 0), (7, 3)]
    assert (4, 4) not in rolled_map_sizes(model, x)
    with torch.no_grad():
        for block in blocks:
            bias = official_bias(block.attn.w_msa, 4)
            torch.testing.assert_close(relative_position_bias(block.attn.w_msa, 4), bias, atol=1e-5, rtol=1e-5)
        expected = reference_block(blocks[1], reference_block(blocks[0], tokens, hw, 4, official_bias(
            blocks[0].attn.w_msa, 4)), hw, 4, official_bias(blocks[1].attn.w_msa, 4))
        padded = plain_block(blocks[1], shift=0)(plain_block(blocks[0], shift=0)(tokens, hw), hw)
    expected = model.norm3(expected).view(2, 4, 4, -1).permute(0, 3, 1, 2)
    padded = model.norm3(padded).view(2, 4, 4, -1).permute(0, 3, 1, 2)
    for task in TASKS:
        torch.testing.assert_close(outs[task][3], expected, atol=1e-4, rtol=1e-4)
    assert relative_difference(padded, expected) > 0.05  # 7x7 windows with 33 zero tokens: not the same
    # stage 4 of an official-rule model built at 128 px (timm) with the official loader's tables, on
    # our stage-4 input (its stage 3, 8x8 and shifted, pads after the roll where mmseg pads before)
    tables = {f'layers.3.blocks.{j}.attn.relative_position_bias_table': official_table(block.attn.w_msa, 4)
              for j, block in enumerate(blocks)}
    ref = timm_swin(SWIN_NANO, 128, ckpt, tables)
    assert [(b.window_size, b.shift_size) for b in ref.layers[3].blocks] == [((4, 4), (0, 0))] * 2
    with torch.no_grad():
        timm_out = ref.norm(ref.layers[3].blocks(tokens.view(2, 4, 4, -1)))
    torch.testing.assert_close(outs['sal'][3], timm_out.permute(0, 3, 1, 2), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------- branched blocks
def tiny_model():
    torch.manual_seed(0)
    model = DiTASKSwinTransformer(TASKS, arch=TINY, window_size=4, pretrain_img_size=64, drop_path_rate=0.0,
                                  adapter=dict(tessellation_size=8, task_tessellation_size=4, theta_init='kaiming'))
    model.init_weights()  # mmseg leaves the bias tables at zero: give them values
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('relative_position_bias_table'):
                param.normal_(0, 0.5)
    model.eval()
    return model


@pytest.mark.parametrize('hw,window', [((4, 4), 4), ((4, 6), 4), ((3, 3), 3), ((2, 2), 2), ((3, 5), 3)])
def test_branched_blocks_follow_the_rule_of_the_shared_ones(hw, window):
    """Shared and per-task outputs of a branched block equal the block run plainly with that task, no shift."""
    model = tiny_model()
    block = model.stages[0].blocks[-1]  # configured shift 2, window 4
    assert block.attn.shift_size == 2 and window_and_shift(block.attn, hw) == (window, 0)
    x = torch.randn(2, hw[0] * hw[1], 16)
    bias = official_bias(block.attn.w_msa, window)
    with torch.no_grad():
        shared, streams = branched_block_forward(block, x, hw, TASKS, need_shared=True)
        torch.testing.assert_close(shared, block(x, hw), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(shared, reference_block(block, x, hw, window, bias), atol=1e-5, rtol=1e-5)
        layers = [layer for _, layer in adapter_layers(block)]
        for task in TASKS:
            for layer in layers:
                layer.active_task = task
            try:
                torch.testing.assert_close(streams[task], block(x, hw), atol=1e-5, rtol=1e-5)
                expected = reference_block(block, x, hw, window, bias)
            finally:
                for layer in layers:
                    layer.active_task = None
            torch.testing.assert_close(streams[task], expected, atol=1e-5, rtol=1e-5)
        with mmseg_windows(model):
            old, _ = branched_block_forward(block, x, hw, TASKS, need_shared=True)
    # 2x2 in a shifted, padded 4x4 window: the old code masks the padding and reads the central
    # sub-table, so only the bias (bicubic vs central) tells them apart
    assert relative_difference(old - x, shared - x) > (1e-3 if hw == (2, 2) else 1e-2)  # the residual branches


def test_rule_is_decided_per_forward_and_keeps_keys_and_parameters():
    model = tiny_model()
    plain = DiTASKSwinTransformer(TASKS, arch=TINY, window_size=4, pretrain_img_size=64, drop_path_rate=0.0,
                                  adapter=dict(tessellation_size=8, task_tessellation_size=4),
                                  official_window_rule=False)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert [(n, p.shape) for n, p in model.named_parameters()] == [(n, p.shape) for n, p in plain.named_parameters()]
    assert all(isinstance(b.attn, OfficialRuleShiftWindowMSA) for s in model.stages for b in s.blocks)
    attn = model.stages[1].blocks[1].attn
    assert [window_and_shift(attn, hw) for hw in [(16, 16), (5, 9), (4, 9), (2, 8)]] == [(4, 2), (4, 2), (4, 0), (2, 0)]
    for size in (64, 128, 64):  # one model, several input sizes
        outs = model(torch.randn(1, 3, size, size))
        assert outs['sal'][3].shape == (1, 128, size // 32, size // 32)
    assert attn.window_size == 4 and attn.shift_size == 2  # the configuration is never modified


def test_the_whole_table_trains_through_the_resize_even_after_an_inference_mode_forward():
    """The cached resize matrices are ordinary tensors; a 2x2 map's gradient reaches all 7x7 table entries."""
    window_rule.bicubic_table_map.cache_clear()
    window_rule.relative_position_index.cache_clear()
    model = tiny_model()
    with torch.inference_mode():  # fills the caches (evaluation before training)
        model(torch.randn(1, 3, 64, 64))
    model.train()
    outs = model(torch.randn(2, 3, 64, 64))  # stage 4: 2x2, window 2 from the window-4 table
    sum((f * torch.randn_like(f)).sum() for maps in outs.values() for f in maps).backward()
    for block in model.stages[3].blocks:
        grad = block.attn.w_msa.relative_position_bias_table.grad
        assert grad.shape == (49, 8) and (grad != 0).all()  # mmseg's masked 4x4 window reached the central 3x3 only
