"""Adapter-only checkpoints on every path a user takes: test.py, dist_test.sh, demo.py, load_from, --resume.

A tiny DiTASK Swin is trained from a local "pretrained" file in the official
Swin format (random values, seeded, so they differ from any default
initialisation); ``extract_adapters.py`` writes its adapter-only checkpoint.
Every tool must then give the same result from the adapter-only file as from
the full checkpoint, or refuse with a message that names the file it needs.
"""
import sys

import cv2
import numpy as np
import pytest
import torch

from ditask_mm.datasets.synthetic import generate

from ..test_models.test_backbones.swin_checkpoints import SwinArch, make_official_checkpoint
from .cli_utils import TINY_ARCH, dist_env, evaluate, metrics, run, tiny_config, train, weights


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('adapter_paths')
    data = root / 'PASCAL_MT'
    generate('pascal', str(data), num_train=6, num_val=5, size=(48, 64), seed=1)
    pretrained = root / 'swin_nano_official.pth'
    torch.save(make_official_checkpoint(SwinArch(**TINY_ARCH), seed=3), pretrained)
    config = tiny_config(root / 'tiny.py', data, pretrained)
    train(config, root / 'run', '--cfg-options', 'train_cfg.max_epochs=2')
    extract = [sys.executable, 'tools/model_converters/extract_adapters.py', config]
    run(extract + [root / 'run/epoch_2.pth', '--out', root / 'adapters.pth'])
    run(extract + [root / 'run/epoch_1.pth', '--out', root / 'adapters_e1_state.pth', '--with-training-state'])
    return root, config, pretrained


def test_test_py_and_dist_test_score_an_adapter_only_checkpoint_like_the_full_one(trained):
    root, config, _ = trained
    evaluate(config, root / 'run/epoch_2.pth', root / 'test_full')
    proc = evaluate(config, root / 'adapters.pth', root / 'test_adapters')
    assert 'adapter-only: loading the pretrained weights' in proc.stdout + proc.stderr
    full, adapters = metrics(root / 'test_full'), metrics(root / 'test_adapters')
    assert full.keys() == adapters.keys() and len(full) >= 13
    assert full == adapters  # same frozen weights, same trained tensors: bit-identical metrics
    run(['bash', 'tools/dist_test.sh', config, root / 'adapters.pth', '2', '--work-dir', root / 'test_dist'],
        env=dist_env())
    distributed = metrics(root / 'test_dist')
    for key in full:  # 2 processes: GEMM rounding may flip a pixel whose top logits tie to 1e-7 (4e-5 of semseg mIoU)
        assert distributed[key] == pytest.approx(full[key], rel=2e-4, abs=1e-4), key


def test_an_adapter_only_checkpoint_without_its_pretrained_weights_is_refused(trained, tmp_path):
    root, config, pretrained = trained
    no_weights = tiny_config(tmp_path / 'no_weights.py', root / 'PASCAL_MT')  # init_cfg=None, as the quick config
    proc = evaluate(no_weights, root / 'adapters.pth', tmp_path / 'none', check=False)
    assert proc.returncode != 0 and not (tmp_path / 'none/metrics.json').exists()
    assert 'adapters.pth is adapter-only' in proc.stderr and 'names no pretrained weights' in proc.stderr
    assert f'trained on top of {pretrained}' in proc.stderr  # the file it needs, as recorded by extract_adapters
    advice = 'model.backbone.init_cfg.type=Pretrained model.backbone.init_cfg.checkpoint=FILE'
    assert advice in proc.stderr
    evaluate(no_weights, root / 'adapters.pth', tmp_path / 'advice', '--cfg-options',
             *advice.replace('FILE', str(pretrained)).split())  # the advice works
    evaluate(config, root / 'run/epoch_2.pth', tmp_path / 'full')
    assert metrics(tmp_path / 'advice') == metrics(tmp_path / 'full')
    missing = tmp_path / 'moved.pth'
    proc = evaluate(config, root / 'adapters.pth', tmp_path / 'missing', '--cfg-options',
                    f'model.backbone.init_cfg.checkpoint={missing}', check=False)
    assert proc.returncode != 0 and f'needs the pretrained weights {missing}' in proc.stderr
    other = tmp_path / 'other_weights.pth'  # same architecture, other values: the adapters do not belong on them
    torch.save(make_official_checkpoint(SwinArch(**TINY_ARCH), seed=4), other)
    proc = evaluate(config, root / 'adapters.pth', tmp_path / 'other', '--cfg-options',
                    f'model.backbone.init_cfg.checkpoint={other}', check=False)
    assert proc.returncode != 0 and 'not the ones its adapters were trained on' in proc.stderr


def test_demo_predicts_the_same_maps_from_the_adapter_only_checkpoint(trained, tmp_path):
    root, config, _ = trained
    yy, xx = np.mgrid[0:50, 0:70]
    cv2.imwrite(str(tmp_path / 'scene.png'), np.stack([xx * 3, yy * 4, 255 - xx * 3], -1).astype(np.uint8))
    for name, checkpoint in (('full', root / 'run/epoch_2.pth'), ('adapters', root / 'adapters.pth')):
        run([sys.executable, 'tools/demo.py', tmp_path / 'scene.png', config, checkpoint, '--out-dir', tmp_path / name])
    for task in ('semseg', 'human_parts', 'sal', 'normals'):
        full = cv2.imread(str(tmp_path / f'full/scene_{task}.png'))
        adapters = cv2.imread(str(tmp_path / f'adapters/scene_{task}.png'))
        assert full is not None and np.array_equal(full, adapters), task


def test_load_from_and_resume_accept_adapter_only_checkpoints(trained):
    root, config, _ = trained
    one_more = ('--cfg-options', 'train_cfg.max_epochs=1')
    train(config, root / 'from_full', *one_more, f'load_from={root / "run/epoch_2.pth"}')
    train(config, root / 'from_adapters', *one_more, f'load_from={root / "adapters.pth"}')
    full, adapters = weights(root / 'from_full/epoch_1.pth'), weights(root / 'from_adapters/epoch_1.pth')
    assert full.keys() == adapters.keys()
    assert [k for k in full if not torch.equal(full[k], adapters[k])] == []
    # --resume from an adapter-only checkpoint that kept the training state continues the run exactly
    train(config, root / 'resumed', '--resume', root / 'adapters_e1_state.pth', '--cfg-options',
          'train_cfg.max_epochs=2')
    original, resumed = weights(root / 'run/epoch_2.pth'), weights(root / 'resumed/epoch_2.pth')
    assert [k for k in original if not torch.equal(original[k], resumed[k])] == []
    # without the training state it says what to do instead
    proc = train(config, root / 'no_state', '--resume', root / 'adapters.pth', check=False)
    assert proc.returncode != 0
    assert 'an adapter-only checkpoint without the training state' in proc.stderr
    assert f'load_from={root / "adapters.pth"}' in proc.stderr and '--with-training-state' in proc.stderr
