"""Rendering task maps and panels (ditask_mm.visualization)."""
import cv2
import matplotlib
import numpy as np
import pytest
import torch

from ditask_mm.datasets import NYUDMTLDataset, PascalContextMTLDataset
from ditask_mm.visualization import (HUMAN_PARTS_PALETTE, NYUD_PALETTE, VOC_PALETTE, colorize_depth,
                                     colorize_labels, make_panel, render_task_map, save_panel, voc_palette)


def luma(rgb):
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def lut(name):
    return np.round(matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


# ------------------------------------------------------------------- labels
def test_voc_palette_is_the_standard_one_in_rgb_order():
    assert VOC_PALETTE.shape == (21, 3) and VOC_PALETTE.dtype == np.uint8
    expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
                15: (192, 128, 128), 20: (0, 64, 128)}  # 15 person, 20 tvmonitor
    for label, color in expected.items():
        assert tuple(VOC_PALETTE[label]) == color, label


def test_label_map_colours_and_ignore_is_black():
    labels = torch.tensor([[[0, 15, 255], [1, 255, 20]]])  # PixelData layout (1, H, W)
    rgb = render_task_map('semseg', labels)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 1]) == (192, 128, 128) and tuple(rgb[1, 0]) == (128, 0, 0)
    assert tuple(rgb[1, 2]) == (0, 64, 128)
    assert tuple(rgb[0, 2]) == tuple(rgb[1, 1]) == (0, 0, 0)
    assert tuple(colorize_labels(labels, VOC_PALETTE, invalid_color=(9, 9, 9))[0, 2]) == (9, 9, 9)
    with pytest.raises(ValueError, match='label 21'):
        render_task_map('semseg', torch.tensor([[21]]))


def test_human_parts_and_nyud_palettes():
    assert len({tuple(c) for c in HUMAN_PARTS_PALETTE}) == 7
    parts = render_task_map('human_parts', np.array([[0, 1, 6, 255]]))
    assert [tuple(c) for c in parts[0]] == [(0, 0, 0), (128, 0, 0), tuple(HUMAN_PARTS_PALETTE[6]), (0, 0, 0)]
    with pytest.raises(ValueError, match='label 7'):
        render_task_map('human_parts', np.array([[7]]))
    assert NYUD_PALETTE.shape == (40, 3) and len({tuple(c) for c in NYUD_PALETTE}) == 40
    assert not (NYUD_PALETTE == 0).all(axis=1).any()  # black is left for ignore
    nyud = render_task_map('semseg', np.array([[0, 39, 255]]), num_classes=40)
    assert tuple(nyud[0, 0]) == tuple(NYUD_PALETTE[0]) != (0, 0, 0)
    assert tuple(nyud[0, 1]) == tuple(NYUD_PALETTE[39]) and tuple(nyud[0, 2]) == (0, 0, 0)


def test_datasets_and_visualiser_share_one_read_only_palette():
    assert PascalContextMTLDataset.METAINFO['palette'] == VOC_PALETTE.tolist()
    assert PascalContextMTLDataset.METAINFO['parts_palette'] == HUMAN_PARTS_PALETTE.tolist()
    assert NYUDMTLDataset.METAINFO['palette'] == NYUD_PALETTE.tolist()
    assert all(type(v) is int for rgb in NYUDMTLDataset.METAINFO['palette'] for v in rgb)  # JSON-safe
    full = voc_palette(256)
    assert full.shape == (256, 3) and full.dtype == np.uint8 and len({tuple(c) for c in full}) == 256
    assert np.array_equal(full[:41], voc_palette(41)) and np.array_equal(full[1:41], NYUD_PALETTE)
    with pytest.raises(ValueError):
        VOC_PALETTE[0, 0] = 1  # shared by every user: read-only
    with pytest.raises(ValueError, match='non-negative int'):
        voc_palette(-1)


# ------------------------------------------------------------------ normals
def test_normals_map_to_rgb_and_invalid_is_black():
    normals = torch.zeros(3, 1, 4)
    normals[:, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    normals[:, 0, 1] = torch.tensor([0.0, -1.0, 0.0])
    normals[:, 0, 2] = torch.tensor([0.0, 0.0, 1.0])
    normals[:, 0, 3] = torch.tensor([0.0, 255.0, 0.0])  # one channel at the ignore value
    rgb = render_task_map('normals', normals)
    assert rgb.shape == (1, 4, 3)
    assert tuple(rgb[0, 0]) == (255, 128, 128)
    assert tuple(rgb[0, 1]) == (128, 0, 128)
    assert tuple(rgb[0, 2]) == (128, 128, 255)
    assert tuple(rgb[0, 3]) == (0, 0, 0)
    all_invalid = render_task_map('normals', torch.full((3, 2, 2), 255.0))
    assert not all_invalid.any()


# ---------------------------------------------------------- saliency, edges
def test_saliency_heat_map_is_monotone_in_probability():
    prob = torch.linspace(0, 1, 11).view(1, 1, 11)
    rgb = render_task_map('sal', prob)
    assert np.all(np.diff(luma(rgb[0].astype(float))) > 0)
    assert tuple(rgb[0, -1]) == tuple(lut('inferno')[255]) and tuple(rgb[0, 0]) == tuple(lut('inferno')[0])
    ignored = render_task_map('sal', np.array([[255.0, 0.5]]))
    assert tuple(ignored[0, 0]) == (0, 0, 0) and tuple(ignored[0, 1]) == tuple(lut('inferno')[128])


def test_edges_are_grey_probability_levels():
    rgb = render_task_map('edge', np.array([[0.0, 0.5, 1.0, 255.0]]))
    assert [tuple(c) for c in rgb[0]] == [(0, 0, 0), (128, 128, 128), (255, 255, 255), (0, 0, 0)]


# -------------------------------------------------------------------- depth
def test_depth_uses_the_valid_range_and_invalid_is_black():
    depth = torch.tensor([[[0.0, 2.0, 3.0, 4.0, 255.0]]])  # 0 and 255 are invalid
    rgb = render_task_map('depth', depth)
    viridis = lut('viridis')
    assert tuple(rgb[0, 0]) == (0, 0, 0) and tuple(rgb[0, 4]) == (0, 0, 0)
    assert tuple(rgb[0, 1]) == tuple(viridis[0])  # nearest valid, not 0, is the low end
    assert tuple(rgb[0, 2]) == tuple(viridis[128])
    assert tuple(rgb[0, 3]) == tuple(viridis[255])
    fixed = render_task_map('depth', depth, depth_range=(0.0, 8.0))
    assert tuple(fixed[0, 3]) == tuple(viridis[128]) and tuple(fixed[0, 1]) == tuple(viridis[64])
    assert not colorize_depth(np.zeros((2, 2))).any()  # nothing valid: all black, no error


# -------------------------------------------------------------------- panel
def _maps(height=30, width=40):
    labels = np.full((height, width), 15)
    return {'semseg': render_task_map('semseg', labels),
            'sal': render_task_map('sal', np.full((height, width), 0.25)),
            'normals': render_task_map('normals', np.stack([np.ones((height, width)), *np.zeros((2, height, width))]))}


def test_panel_layout_with_and_without_ground_truth(tmp_path):
    image = np.zeros((60, 80, 3), np.uint8)
    image[..., 0] = 200  # red input
    preds = _maps()
    panel = make_panel(image, preds, tile_size=(48, 64))
    assert panel.shape == (48, 4 * 64, 3)
    # tiles in order, below the title band: input, semseg (person colour), sal, normals
    assert tuple(panel[-1, 5]) == (200, 0, 0)
    assert tuple(panel[-1, 64 + 5]) == (192, 128, 128)
    assert tuple(panel[-1, 2 * 64 + 5]) == tuple(lut('inferno')[64])
    assert tuple(panel[-1, 3 * 64 + 5]) == (255, 128, 128)
    assert (panel[:5, 64:128] != (192, 128, 128)).any()  # a title band is drawn
    out = tmp_path / 'sub' / 'panel.png'
    two_rows = save_panel(str(out), image, preds, {'semseg': preds['semseg']}, tile_size=(48, 64))
    assert two_rows.shape == (2 * 48, 4 * 64, 3)
    written = cv2.cvtColor(cv2.imread(str(out), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, two_rows)  # RGB on disk, not BGR
    assert tuple(two_rows[-1, 64 + 5]) == (192, 128, 128)  # semseg GT
    assert [p.name for p in out.parent.iterdir()] == ['panel.png']  # no temporary file left


def test_panel_tiles_default_to_the_image_size():
    panel = make_panel(np.zeros((30, 40, 3), np.uint8), _maps())
    assert panel.shape == (30, 4 * 40, 3)
    big = make_panel(np.zeros((600, 800, 3), np.uint8), _maps(), max_tile_side=200)
    assert big.shape == (150, 4 * 200, 3)
    with pytest.raises(KeyError, match='depth'):
        make_panel(np.zeros((30, 40, 3), np.uint8), _maps(), tasks=['semseg', 'depth'])
