"""The main job's pipeline (tools/main.sh), end to end on a tiny Swin and one epoch per run.

Stand-in pretraining (plain Swin, every parameter trains) → export of its
backbone in the official Swin format → DiTASK and decoder-only fine-tuning from
that file through ``init_cfg`` Pretrained → ``tools/test.py`` → the comparison
table. The fine-tuned models' frozen backbone weights must be the stand-in's
trained ones, which proves the official-format file was read and converted back
exactly.
"""
import json
import re
import sys

import pytest
import torch

from ditask_mm.datasets.synthetic import generate

from .cli_utils import REPO, TINY, evaluate, metrics, run, train, weights

CONFIGS = REPO / 'configs/main_job'
STANDIN = CONFIGS / 'standin-pretrain_swin-t_synthetic.py'
DITASK = CONFIGS / 'ditask_swin-t_synthetic-mtl_from-standin.py'
DECODER_ONLY = CONFIGS / 'decoder-only_swin-t_synthetic-mtl_from-standin.py'
#: The linears DiTASK keeps frozen (the public trainable policy trains norms, tables, reductions, patch_embed).
FROZEN_LINEAR = re.compile(r'\.(attn\.w_msa\.(qkv|proj)|ffn\.layers\.(0\.0|1))\.(weight|bias)$')
ONE_EPOCH = ('train_cfg.max_epochs=1',)


def tiny(path, base, data):
    """The config ``base`` at the tests' tiny Swin size (``cli_utils.TINY``) on ``data``."""
    path.write_text(TINY.format(base=base, data=data))
    return path


def backbone_tensors(checkpoint):
    return {k[len('backbone.'):]: v for k, v in weights(checkpoint).items() if k.startswith('backbone.')}


@pytest.fixture(scope='module')
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp('main_job')
    data = root / 'PASCAL_MT'
    generate('pascal', str(data), num_train=4, num_val=3, size=(48, 64), seed=2)
    standin_cfg = tiny(root / 'standin.py', STANDIN, data)
    train(standin_cfg, root / 'standin', '--cfg-options', *ONE_EPOCH)
    official = root / 'standin' / 'swin_official.pth'
    proc = run([sys.executable, 'tools/model_converters/export_official_swin.py', standin_cfg,
                root / 'standin/epoch_1.pth', '--out', official])
    assert 'official Swin layout' in proc.stdout
    runs = {}
    for name, base in (('ditask', DITASK), ('decoder-only', DECODER_ONLY)):
        config = tiny(root / f'{name}.py', base, data)
        train(config, root / name / 'train', '--cfg-options', *ONE_EPOCH,
              f'model.backbone.init_cfg.checkpoint={official}')
        extra = ['--show-dir', root / name / 'panels'] if name == 'ditask' else []
        evaluate(config, root / name / 'train/epoch_1.pth', root / name / 'test', *extra)
        runs[name] = root / name
    compare = run([sys.executable, 'tools/analysis_tools/compare_runs.py', runs['ditask'], runs['decoder-only'],
                   '--names', 'DiTASK', 'decoder-only'])
    return root, official, runs, compare


def test_export_is_in_the_official_layout(pipeline):
    _, official, _, _ = pipeline
    sd = torch.load(official, map_location='cpu', weights_only=False)['model']
    assert 'patch_embed.proj.weight' in sd and 'layers.0.blocks.1.attn.qkv.weight' in sd
    assert 'layers.0.downsample.reduction.weight' in sd and 'norm.weight' in sd
    assert 'layers.0.blocks.1.attn_mask' in sd and 'layers.0.blocks.0.attn.relative_position_index' in sd
    assert not any(k.startswith('stages.') or 'theta_' in k for k in sd)


def test_fine_tuned_models_start_from_the_standin_weights(pipeline):
    root, _, runs, _ = pipeline
    standin = backbone_tensors(root / 'standin/epoch_1.pth')
    decoder_only = backbone_tensors(runs['decoder-only'] / 'train/epoch_1.pth')
    # the frozen backbone of the decoder-only run is the stand-in's, tensor for tensor
    assert sorted(decoder_only) == sorted(standin)
    for key, value in standin.items():
        assert torch.equal(decoder_only[key], value), key
    ditask = backbone_tensors(runs['ditask'] / 'train/epoch_1.pth')
    frozen = [k for k in ditask if FROZEN_LINEAR.search(k)]
    assert len(frozen) == 4 * 2 * 8  # 8 blocks x 4 linears x (weight, bias); the last block's too
    for key in frozen:
        assert torch.equal(ditask[key], standin[key]), key
    # what DiTASK trains did move away from the stand-in (so the equality above is not a no-op)
    assert any('theta_' in k for k in ditask)
    reduction = 'stages.0.downsample.reduction.weight'
    assert not torch.equal(ditask[reduction], standin[reduction])


def test_both_runs_are_tested_and_compared_side_by_side(pipeline):
    root, _, runs, compare = pipeline
    ditask, decoder_only = metrics(runs['ditask'] / 'test'), metrics(runs['decoder-only'] / 'test')
    assert ditask.keys() == decoder_only.keys() and 'delta_m' in ditask
    assert len(list((runs['ditask'] / 'panels').glob('*.png'))) == 3
    table = compare.stdout
    header = table.splitlines()[0]
    assert 'DiTASK' in header and 'decoder-only' in header
    for key in ditask:
        row = next(line for line in table.splitlines() if line.startswith(f'| {key} ') or f'({key})' in line)
        assert f'{ditask[key]:.3f}' in row and f'{decoder_only[key]:.3f}' in row, row
    result = json.loads((root / 'comparison.json').read_text())
    assert (root / 'comparison.md').read_text() in table
    params = {run['name']: run['trainable_parameters'] for run in result['runs']}
    assert params['decoder-only']['backbone_trainable'] == 0 < params['DiTASK']['backbone_trainable']
    assert params['DiTASK']['decode_heads'] == params['decoder-only']['decode_heads'] > 0
    assert all(run['train_seconds'] is not None and run['train_seconds'] >= 0 for run in result['runs'])


# ------------------------------------------------- the comparison on its own
def write_metrics(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    return path


def test_compare_tool_on_two_metrics_files_shows_a_missing_metric_as_a_dash(tmp_path):
    write_metrics(tmp_path / 'a/test/metrics.json', {'delta_m': -2.5, 'semseg.mIoU': 40.0, 'sal.maxF': 70.25})
    b = write_metrics(tmp_path / 'b/metrics.json', {'delta_m': -7.0, 'semseg.mIoU': 31.5})
    proc = run([sys.executable, 'tools/analysis_tools/compare_runs.py', tmp_path / 'a', b, '--names', 'A', 'B',
                '--out-dir', tmp_path / 'out', '--no-params'])
    lines = proc.stdout.splitlines()
    cells = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]] for line in lines
             if line.startswith('| ')}
    assert cells['metric'] == ['A', 'B', 'A − B']
    assert list(cells)[1] == 'Δm (delta_m)'  # the multi-task score first
    assert cells['Δm (delta_m)'] == ['-2.500', '-7.000', '4.500']
    assert cells['semseg.mIoU'] == ['40.000', '31.500', '8.500']
    assert cells['sal.maxF'] == ['70.250', '-', '-']
    assert cells['trainable params: total'] == ['-', '-', '-'] and cells['training time (s)'] == ['-', '-', '-']
    saved = json.loads((tmp_path / 'out/comparison.json').read_text())
    assert [r['name'] for r in saved['runs']] == ['A', 'B']
    assert saved['runs'][1]['metrics'] == {'delta_m': -7.0, 'semseg.mIoU': 31.5}
    assert (tmp_path / 'out/comparison.md').read_text() in proc.stdout


def test_compare_tool_names_a_missing_or_malformed_metrics_file(tmp_path):
    good = write_metrics(tmp_path / 'good/metrics.json', {'delta_m': 1.0})
    proc = run([sys.executable, 'tools/analysis_tools/compare_runs.py', good, tmp_path / 'nothing', '--no-params'],
               check=False)
    assert proc.returncode == 1
    assert f'{tmp_path / "nothing"}: no metrics.json' in proc.stderr and 'tools/test.py' in proc.stderr
    bad = write_metrics(tmp_path / 'bad/metrics.json', {'delta_m': 'high'})
    proc = run([sys.executable, 'tools/analysis_tools/compare_runs.py', good, bad, '--no-params'], check=False)
    assert proc.returncode == 1 and "metrics ['delta_m'] are not numbers" in proc.stderr and str(bad) in proc.stderr
    proc = run([sys.executable, 'tools/analysis_tools/compare_runs.py', good, bad, '--names', 'only-one',
                '--no-params'], check=False)
    assert proc.returncode == 1 and 'give one name per run' in proc.stderr
