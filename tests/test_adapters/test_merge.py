"""Folding adapters into plain weights: merged models and plain mmseg Swin exports."""
import copy

import torch
from mmseg.models.backbones import SwinTransformer

from ditask_mm.adapters import MergedTaskLinear, adapter_layers, merge_adapters
from ditask_mm.adapters.svd_cache import SVDCache
from ditask_mm.models.backbones.window_rule import apply_official_window_rule

from ..test_models.test_segmentors.utils import TINY_ARCH, build_tiny_segmentor, make_batch


def test_merged_segmentor_gives_the_same_predictions_without_adapter_work():
    model = build_tiny_segmentor()
    model.eval()
    batch = make_batch()
    with torch.no_grad():
        expected = model(**model.data_preprocessor(copy.deepcopy(batch)), mode='tensor')
    merged = copy.deepcopy(model)
    layers = merge_adapters(merged)
    assert layers and all(isinstance(m, MergedTaskLinear) for _, m in adapter_layers(merged))
    assert not any('theta_' in k for k in merged.state_dict())
    calls = []
    original = SVDCache.rebuild
    SVDCache.rebuild = lambda self, values: calls.append(1) or original(self, values)
    try:
        with torch.no_grad():
            outputs = merged(**merged.data_preprocessor(copy.deepcopy(batch)), mode='tensor')
    finally:
        SVDCache.rebuild = original
    assert calls == []
    for task, out in outputs.items():
        torch.testing.assert_close(out, expected[task], atol=1e-4, rtol=1e-4)


def test_merged_checkpoint_loads_into_a_mergedtasklinear_model():
    model = build_tiny_segmentor()
    model.eval()
    merged = copy.deepcopy(model)
    merge_adapters(merged)
    rebuilt = build_tiny_segmentor(theta_init='zeros')
    cfg_adapter = dict(type='MergedTaskLinear', tessellation_size=8, task_tessellation_size=4)
    rebuilt.backbone = type(rebuilt.backbone)(rebuilt.tasks, arch=TINY_ARCH, window_size=4, pretrain_img_size=64,
                                              drop_path_rate=0.0, adapter=cfg_adapter)
    rebuilt.load_state_dict(merged.state_dict(), strict=True)
    rebuilt.eval()
    batch = make_batch()
    with torch.no_grad():
        a = merged(**merged.data_preprocessor(copy.deepcopy(batch)), mode='tensor')
        b = rebuilt(**rebuilt.data_preprocessor(copy.deepcopy(batch)), mode='tensor')
    for task in a:
        torch.testing.assert_close(a[task], b[task])


def test_shared_trunk_export_loads_into_unmodified_mmseg_swin():
    model = build_tiny_segmentor()
    backbone = model.backbone
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    # reference: the adapted shared trunk, stage by stage (PatchMerging outputs)
    with torch.no_grad():
        tokens, hw = backbone.patch_embed(x)
        trunk = []
        for i, stage in enumerate(backbone.stages):
            for block in stage.blocks:
                tokens = block(tokens, hw) if i < 3 or block is not stage.blocks[-1] else tokens
            if stage.downsample is not None:
                tokens, hw = stage.downsample(tokens, hw)
                trunk.append(tokens)
    merge_adapters(backbone)
    plain_sd = {k: v for k, v in backbone.state_dict().items() if '.task_weights.' not in k}
    plain = SwinTransformer(pretrain_img_size=64, window_size=4, drop_path_rate=0.0, out_indices=(), **TINY_ARCH)
    result = plain.load_state_dict(plain_sd, strict=False)
    assert result.unexpected_keys == [] and result.missing_keys == []
    apply_official_window_rule(plain)  # as our backbone does: stage 3 is 4x4 at 64 px, one window
    plain.eval()
    with torch.no_grad():
        tokens, hw = plain.patch_embed(x)
        for i, stage in enumerate(plain.stages[:3]):
            tokens, hw, _, _ = stage(tokens, hw)
            torch.testing.assert_close(tokens, trunk[i], atol=1e-4, rtol=1e-4)
