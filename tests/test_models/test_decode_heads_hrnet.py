"""MTLHRNetHead: the public HRNet-style decoder, per task."""
import pytest
import torch
import torch.nn.functional as F

import ditask_mm.models  # noqa: F401
from ditask_mm.models.decode_heads import MTLHRNetHead


def test_public_parameter_count_for_the_pascal_tasks():
    # docs/method.md §5: downsampler 183,168 + head 292,680 + BN 2,160 + last conv, per task
    heads = [MTLHRNetHead([192, 384, 768, 768], c) for c in (21, 7, 1, 3)]
    assert sum(p.numel() for h in heads for p in h.parameters()) == 1_946_624


def test_forward_matches_the_described_computation():
    torch.manual_seed(0)
    head = MTLHRNetHead([8, 16, 32, 32], out_channels=5, projection_channels=(2, 3, 4, 5)).eval()
    feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4), torch.randn(2, 32, 2, 2), torch.randn(2, 32, 2, 2)]
    out = head(feats, out_size=(64, 64))
    assert out.shape == (2, 5, 64, 64)
    proj = [F.conv2d(f, p.weight) for f, p in zip(feats, head.projections)]
    up = [proj[0]] + [F.interpolate(p, size=(8, 8), mode='bilinear', align_corners=False) for p in proj[1:]]
    hidden = head.fuse(torch.cat(up, 1))
    assert hidden.shape[1] == 4 * 14  # default width: 4 × sum(projection widths)
    expected = F.interpolate(head.classifier(hidden), size=(64, 64), mode='bilinear', align_corners=False)
    torch.testing.assert_close(out, expected)
    assert head(feats).shape == (2, 5, 8, 8)  # no out_size: finest scale


def test_shape_errors_name_the_scale():
    head = MTLHRNetHead([8, 16], out_channels=1, projection_channels=(2, 2))
    with pytest.raises(ValueError, match='scale 1 has 8 channels, expected 16'):
        head([torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)])
    with pytest.raises(ValueError, match='one entry per scale'):
        MTLHRNetHead([8, 16], out_channels=1)
