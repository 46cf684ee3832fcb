"""The mmcv-lite ``mmcv.ops`` shim (ditask_mm.compat.mmcv_ops)."""
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import ditask_mm  # noqa: F401  (applies the patches)
from ditask_mm.compat import MissingCompiledOpError, mmcv_ops

pytestmark = pytest.mark.skipif(mmcv_ops.compiled_mmcv_available(),
                                reason='full mmcv installed: the shim is (correctly) inactive')


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


def test_mmseg_models_fails_without_shim_and_imports_with_it():
    bare = run_python('import mmseg.models')
    assert bare.returncode != 0
    assert "mmcv._ext" in bare.stderr
    patched = run_python("""
        import ditask_mm, mmseg.models, mmseg.datasets, mmseg.visualization, mmseg.apis
        import mmpretrain.models
        print('IMPORTED')
    """)
    assert patched.returncode == 0, patched.stderr
    assert 'IMPORTED' in patched.stdout


def test_shim_is_idempotent_and_logs_once():
    res = run_python("""
        import ditask_mm
        from ditask_mm.compat import mmcv_ops
        print(ditask_mm.COMPAT_STATUS['mmcv_ops'], mmcv_ops.apply(), mmcv_ops.apply())
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-3:] == ['installed', 'active', 'active']
    assert (res.stdout + res.stderr).count('mmcv._ext not found') == 1


def test_pure_torch_point_sample_is_served():
    from mmcv.ops import bilinear_grid_sample, point_sample
    feats = torch.arange(16.).view(1, 1, 4, 4)
    points = torch.tensor([[[0.125, 0.125], [0.875, 0.375]]])  # relative (x, y) in [0, 1]
    out = point_sample(feats, points, align_corners=False)
    expected = F.grid_sample(feats, 2 * points.unsqueeze(2) - 1, align_corners=False).squeeze(3)
    torch.testing.assert_close(out, expected)
    assert out.flatten().tolist() == [0.0, 7.0]  # pixel centres of (0,0) and (row 1, col 3)
    grid = torch.rand(1, 3, 3, 2) * 2 - 1
    torch.testing.assert_close(bilinear_grid_sample(feats, grid, align_corners=False),
                               F.grid_sample(feats, grid, align_corners=False))


def test_compiled_ops_raise_import_error_with_instructions():
    with pytest.raises(ImportError, match=r'(?i)mmcv\.ops\.nms is not available.*install full mmcv'):
        from mmcv.ops import nms  # noqa: F401
    with pytest.raises(MissingCompiledOpError, match='roi_align'):
        import mmcv.ops.roi_align  # noqa: F401
    # imported by mmseg at import time without a guard: raises only when used
    from mmcv.ops import sigmoid_focal_loss
    with pytest.raises(MissingCompiledOpError, match='sigmoid_focal_loss'):
        sigmoid_focal_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 2.0, 0.25)


def test_guarded_mmseg_heads_take_their_fallback():
    from mmseg.models.decode_heads import cc_head, psa_head
    assert cc_head.CrissCrossAttention is None
    assert psa_head.PSAMask is None
    ops = sys.modules['mmcv.ops']
    assert not hasattr(ops, '__wrapped__')  # dunder probes stay AttributeError
