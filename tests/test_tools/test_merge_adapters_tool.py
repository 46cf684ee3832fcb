"""tools/model_converters/merge_adapters.py end to end on a tiny config."""
import subprocess
import sys
from pathlib import Path

import torch
from mmengine.config import Config
from mmseg.models.backbones import SwinTransformer

from ..test_models.test_segmentors.utils import TINY_ARCH, build_tiny_segmentor, tiny_segmentor_cfg

REPO = Path(__file__).resolve().parents[2]


def test_merge_tool_writes_merged_model_and_plain_trunk(tmp_path):
    cfg = Config(dict(model=tiny_segmentor_cfg(), default_scope='ditask_mm',
                      custom_imports=dict(imports=['ditask_mm', 'ditask_mm.models'])))
    cfg.dump(str(tmp_path / 'tiny.py'))
    model = build_tiny_segmentor()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, tmp_path / 'model.pth')
    proc = subprocess.run([sys.executable, str(REPO / 'tools/model_converters/merge_adapters.py'),
                           str(tmp_path / 'tiny.py'), str(tmp_path / 'model.pth'), '--out-dir', str(tmp_path / 'out')],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert 'merged 32 adapter layers (12 with per-task weights)' in proc.stdout
    merged = torch.load(tmp_path / 'out/merged.pth', weights_only=False)
    assert not any('theta_' in k for k in merged['state_dict'])
    assert any('.task_weights.sal' in k for k in merged['state_dict'])
    trunk = torch.load(tmp_path / 'out/backbone_mmseg_swin.pth', weights_only=False)['state_dict']
    plain = SwinTransformer(pretrain_img_size=64, window_size=4, out_indices=(), **TINY_ARCH)
    plain.load_state_dict(trunk, strict=True)  # an unmodified mmseg Swin takes it whole
    assert not list((tmp_path / 'out').glob('*.tmp'))
