"""Shared pieces of the end-to-end tests that run ``tools/*.py`` in subprocesses.

``TINY`` is a DiTASK Swin of the same structure as Swin-T (4 stages, shifted
windows, task branches, HRNet heads), small enough to train an epoch on the
generated PASCAL_MT tree in a few seconds.
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import torch

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / 'configs/ditask/swin-t_synthetic-mtl_quick.py'
TINY_ARCH = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4, img_size=64)
TINY = """
_base_ = ['{base}']
data_root = '{data}'
img_size = (64, 64)
model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
                           window_size=4, pretrain_img_size=64),
             decode_head=dict(projection_channels=(4, 4, 4, 4)))  # the template of every task's head
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadMultiTaskAnnotations'),
    dict(type='RandomFlipMTL', prob=0.5), dict(type='ScaleRotateMTL', rotation=(-10, 10), scale=(0.9, 1.1)),
    dict(type='FixedResizeMTL', size=img_size), dict(type='AddIgnoreRegions'), dict(type='PackMultiTaskInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadMultiTaskAnnotations'),
    dict(type='FixedResizeMTL', size=img_size, eval_at_resized=True), dict(type='AddIgnoreRegions'),
    dict(type='PackMultiTaskInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
max_epochs = 3
param_scheduler = [dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=0, end=max_epochs,
                        T_max=max_epochs, convert_to_iter_based=True)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=3)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=5))
"""
#: Appended to ``TINY``: the backbone starts from a local pretrained file, as a user's real weights would.
PRETRAINED = "model['backbone']['init_cfg'] = dict(_delete_=True, type='Pretrained', checkpoint='{checkpoint}')\n"


def tiny_config(path: Path, data: Path, pretrained: Path = None, extra: str = '') -> Path:
    """Write the tiny config (optionally on a pretrained backbone file) to ``path``."""
    text = TINY.format(base=QUICK, data=data)
    if pretrained is not None:
        text += PRETRAINED.format(checkpoint=pretrained)
    path.write_text(text + extra)
    return path


def run(args, timeout=600, env=None, check=True) -> subprocess.CompletedProcess:
    """Run a command from the repository root; by default assert it succeeded (showing its output if not)."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def train(config, work_dir, *extra, check=True) -> subprocess.CompletedProcess:
    return run([sys.executable, 'tools/train.py', config, '--work-dir', work_dir, *extra], check=check)


def evaluate(config, checkpoint, work_dir, *extra, check=True) -> subprocess.CompletedProcess:
    return run([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir', work_dir, *extra], check=check)


def weights(path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def metrics(work_dir) -> Dict[str, float]:
    """``metrics.json`` that ``tools/test.py`` wrote into ``work_dir``."""
    return json.loads((Path(work_dir) / 'metrics.json').read_text())


def scalars(work_dir) -> list:
    """Every record of the run's ``vis_data/scalars.json`` (one JSON object per logged step)."""
    files = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    assert files, f'no scalars.json under {work_dir}'
    return [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]


def dist_env() -> dict:
    """Environment for ``tools/dist_*.sh``: this interpreter and a port of its own."""
    return dict(PYTHON=sys.executable, PORT=str(29500 + os.getpid() % 1000))
