"""extract_adapters, load_adapter_checkpoint, demo and plot_spectra on a tiny segmentor."""
import copy
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ditask_mm.adapters import DiTASKLinear, adapter_layers
from ditask_mm.models.adapter_checkpoint import adapter_state_dict, load_adapter_checkpoint
from ditask_mm.models.checkpoint_fit import CheckpointMismatchError
from ditask_mm.registry import MODELS
from ditask_mm.visualization import VOC_PALETTE, render_task_map

from ..test_models.test_segmentors.utils import build_tiny_segmentor, make_batch, tiny_segmentor_cfg

REPO = Path(__file__).resolve().parents[2]
HEAD_BUFFERS = ('running_mean', 'running_var', 'num_batches_tracked')


def run_tool(script, *args):
    """Run a tool in a fresh interpreter (checks that it imports and runs on its own)."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def run_tool_here(capsys, script, *args):
    """Run a tool as ``__main__`` in this process (saves the interpreter start and imports)."""
    argv, sys.argv = sys.argv, [str(REPO / script), *map(str, args)]
    try:
        runpy.run_path(str(REPO / script), run_name='__main__')
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def dump_config(path, **kwargs):
    Config(dict(model=tiny_segmentor_cfg(**kwargs), default_scope='ditask_mm',
                custom_imports=dict(imports=['ditask_mm', 'ditask_mm.models']))).dump(str(path))
    return path


def build(seed, cfg=None):
    init_default_scope('ditask_mm')
    torch.manual_seed(seed)
    return MODELS.build(cfg or tiny_segmentor_cfg())  # random init from the seed; SVD caches fill on first use


def tensor_outputs(model):
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(make_batch(sizes=((64, 48),)), False)
        return model(data['inputs'], mode='tensor')


class Recorder:
    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(msg)

    warning = info


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 'trained' tiny model: perturbed θ, norms, heads and BatchNorm statistics; its config and checkpoint."""
    root = tmp_path_factory.mktemp('ckpt')
    model = build_tiny_segmentor(theta_init='kaiming')
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=g))
        for name, buf in model.named_buffers():
            if name.endswith(('running_mean', 'running_var')):
                buf.add_(0.3 * torch.rand(buf.shape, generator=g))
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 1}}, root / 'full.pth')
    return model, dump_config(root / 'tiny.py'), root / 'full.pth'


# -------------------------------------------------------- extract + load
def test_extract_keeps_trainable_and_head_buffers_and_reloads_exactly(trained, tmp_path):
    model, config, full = trained
    out = tmp_path / 'adapters.pth'
    proc = run_tool('tools/model_converters/extract_adapters.py', config, full, '--out', out)
    assert proc.returncode == 0, proc.stderr
    sizes = re.search(r'full checkpoint: ([\d.]+) MB, adapter-only: ([\d.]+) MB', proc.stdout)
    assert sizes and float(sizes.group(2)) < float(sizes.group(1))
    assert out.stat().st_size < full.stat().st_size and not list(tmp_path.glob('*.tmp'))

    saved = torch.load(out, weights_only=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    head_buffers = {k for k in model.state_dict() if k.startswith('decode_heads.') and k.endswith(HEAD_BUFFERS)}
    assert head_buffers and frozen and any(k.endswith('qkv.weight') for k in frozen)
    assert set(saved['state_dict']) == trainable | head_buffers
    assert saved['meta']['kind'] == 'adapter_only' and saved['meta']['keys'] == len(saved['state_dict'])
    assert saved['meta']['source'] == str(full) and 'DiTASKSwinTransformer' in saved['meta']['config']

    # a fresh model (other random init) with the same frozen weights, then the adapters on top
    fresh = build(seed=123)
    full_sd = torch.load(full, weights_only=False)['state_dict']
    fresh.load_state_dict({k: v for k, v in full_sd.items() if k not in saved['state_dict']}, strict=False)
    expected = tensor_outputs(model)
    before = tensor_outputs(fresh)
    assert not torch.allclose(before['semseg'], expected['semseg'])
    ditask = [layer for _, layer in adapter_layers(fresh) if isinstance(layer, DiTASKLinear)]
    refreshes = [layer.svd.num_refreshes for layer in ditask]
    log = Recorder()
    assert load_adapter_checkpoint(fresh, str(out), logger=log) == len(saved['state_dict'])
    assert all(layer.svd.num_refreshes > n for layer, n in zip(ditask, refreshes))  # SVD caches refreshed
    assert any(f'loaded {len(saved["state_dict"])} tensors' in line for line in log.lines)
    after = tensor_outputs(fresh)
    for task in model.tasks:
        assert torch.equal(after[task], expected[task]), task


def test_load_adapter_checkpoint_rejects_other_architectures_and_empty_files(tmp_path):
    model = build(seed=0)
    cfg = copy.deepcopy(tiny_segmentor_cfg())
    cfg['backbone']['adapter']['tessellation_size'] = 16
    torch.save({'meta': {}, 'state_dict': adapter_state_dict(build(0, cfg))}, tmp_path / 'other_tess.pth')
    with pytest.raises(CheckpointMismatchError, match=r"qkv\.theta_shared'.*\(15,\).*\(7,\)") as err:
        load_adapter_checkpoint(model, str(tmp_path / 'other_tess.pth'))
    assert 'other_tess.pth' in str(err.value)
    other_tasks = build(0, tiny_segmentor_cfg(tasks=('semseg', 'depth')))
    torch.save({'meta': {}, 'state_dict': adapter_state_dict(other_tasks)}, tmp_path / 'other_tasks.pth')
    with pytest.raises(CheckpointMismatchError, match=r"theta_tasks\.depth'.*not in the model"):
        load_adapter_checkpoint(model, str(tmp_path / 'other_tasks.pth'))
    torch.save({'meta': {'kind': 'adapter_only'}, 'state_dict': {}}, tmp_path / 'empty.pth')
    with pytest.raises(CheckpointMismatchError, match='empty.pth holds no tensors'):
        load_adapter_checkpoint(model, str(tmp_path / 'empty.pth'))


# ------------------------------------------------------------------ demo
def test_demo_writes_task_maps_and_panel(trained, tmp_path):
    model, config, full = trained
    yy, xx = np.mgrid[0:70, 0:90]
    image = np.stack([xx * 2, yy * 3, 255 - xx * 2], -1).astype(np.uint8)
    cv2.circle(image, (45, 35), 15, (0, 0, 255), -1)
    cv2.imwrite(str(tmp_path / 'scene.png'), image)
    proc = run_tool('tools/demo.py', tmp_path / 'scene.png', config, full, '--out-dir', tmp_path / 'out',
                    '--size', 64, 96)
    assert proc.returncode == 0, proc.stderr
    assert 'resized 70x90 -> 64x96' in proc.stdout
    for task in model.tasks:
        path = tmp_path / 'out' / f'scene_{task}.png'
        assert str(path) in proc.stdout
        assert cv2.imread(str(path)).shape == (70, 90, 3)  # back at the original size
    panel = cv2.imread(str(tmp_path / 'out/scene_panel.png'))
    assert panel.shape == (70, (1 + len(model.tasks)) * 90, 3)
    # the CLI's semseg map is what the model predicts in-process for the same (BGR, resized) input
    resized = cv2.resize(image, (96, 64), interpolation=cv2.INTER_LINEAR)
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(ori_shape=(70, 90), img_shape=(64, 96)))
    model.eval()
    with torch.no_grad():
        result = model.test_step(dict(inputs=[torch.from_numpy(resized).permute(2, 0, 1)], data_samples=[sample]))[0]
    expected = render_task_map('semseg', result.pred_sem_seg.data)
    written = cv2.cvtColor(cv2.imread(str(tmp_path / 'out/scene_semseg.png')), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, expected)
    assert {tuple(c) for c in written.reshape(-1, 3)} <= {tuple(c) for c in VOC_PALETTE}


def test_demo_rejects_a_checkpoint_of_another_architecture(trained, tmp_path, capsys):
    _, config, _ = trained
    wrong = build(0, tiny_segmentor_cfg(tasks=('semseg', 'depth')))
    torch.save({'state_dict': wrong.state_dict(), 'meta': {}}, tmp_path / 'wrong.pth')
    cv2.imwrite(str(tmp_path / 'img.png'), np.zeros((32, 32, 3), np.uint8))
    proc = run_tool_here(capsys, 'tools/demo.py', tmp_path / 'img.png', config, tmp_path / 'wrong.pth',
                         '--out-dir', tmp_path / 'o')
    assert proc.returncode != 0
    assert f'checkpoint {tmp_path / "wrong.pth"} does not fit' in proc.stderr
    assert 'theta_tasks.depth' in proc.stderr and 'theta_tasks.human_parts' in proc.stderr
    assert 'Traceback' not in proc.stderr and not (tmp_path / 'o').exists()


# ---------------------------------------------------------- plot_spectra
def test_plot_spectra_relative_change_is_zero_at_theta_zero(tmp_path, capsys):
    model = build_tiny_segmentor(theta_init='zeros')
    layers = dict(adapter_layers(model))
    with torch.no_grad():
        layers['backbone.stages.3.blocks.0.attn.w_msa.qkv'].theta_shared.add_(0.3)
        layers['backbone.stages.3.blocks.1.ffn.layers.0.0'].theta_tasks['sal'].add_(-0.4)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, tmp_path / 'model.pth')
    config = dump_config(tmp_path / 'tiny.py', theta_init='zeros')
    proc = run_tool_here(capsys, 'tools/analysis_tools/plot_spectra.py', config, tmp_path / 'model.pth',
                         '--out', tmp_path / 'out',
                         '--layers', r'stages\.3\.blocks\.(0\.attn|1\.ffn)', '--max-layers', 3)
    assert proc.returncode == 0, proc.stderr
    assert '[3/3]' in proc.stdout
    report = json.loads((tmp_path / 'out/spectra.json').read_text())['layers']
    assert list(report) == ['backbone.stages.3.blocks.0.attn.w_msa.qkv', 'backbone.stages.3.blocks.0.attn.w_msa.proj',
                            'backbone.stages.3.blocks.1.ffn.layers.0.0']
    for name, entry in report.items():
        assert (tmp_path / 'out' / entry['png']).stat().st_size > 0
        assert entry['png'] == name.replace('.', '_') + '.png'
        for transform, change in entry['relative_change'].items():
            perturbed = (name, transform) in {('backbone.stages.3.blocks.0.attn.w_msa.qkv', 'shared'),
                                              ('backbone.stages.3.blocks.1.ffn.layers.0.0', 'sal')}
            assert (change > 1e-3) if perturbed else (change == 0.0), (name, transform, change)
    assert report['backbone.stages.3.blocks.0.attn.w_msa.qkv']['num_splits'] == 3
    last = report['backbone.stages.3.blocks.1.ffn.layers.0.0']['relative_change']
    assert set(last) == set(model.tasks)  # no shared transform in the last block of the last stage
    assert (tmp_path / 'out/summary.png').stat().st_size > 0
