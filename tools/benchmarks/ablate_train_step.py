#!/usr/bin/env python
"""Where the DiTASK training step goes: one process, variants of the Swin-T PASCAL config.

Times ``model.train_step`` (median of 2 after a warm-up step) at batch 2 × 448²
for the paper config, without main-path dropout, with the dense or factored
adapted product forced, without task branches, and full fine-tuning.

Example::

    python tools/benchmarks/ablate_train_step.py
"""
import copy, sys, time, statistics, torch
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
import ditask_mm
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.optim import OptimWrapper
import ditask_mm.models
from ditask_mm.registry import MODELS
from bench_model import random_batch
import argparse
import os
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
variants = {
 'paper (dropout 0.05)': [],
 'clean (no dropout)': ['model.backbone.adapter.main_path_dropout=0.0'],
 'clean, dense': ['model.backbone.adapter.main_path_dropout=0.0', 'model.backbone.adapter.compute_mode=dense'],
 'clean, factored': ['model.backbone.adapter.main_path_dropout=0.0', 'model.backbone.adapter.compute_mode=factored'],
 'clean, no task branches': ['model.backbone.adapter.main_path_dropout=0.0', 'model.backbone.task_layers=()'],
 'full FT': None,
}
for name, opts in variants.items():
    config = 'baselines/full-ft_swin-t_pascal-mtl.py' if opts is None else 'ditask/swin-t_pascal-mtl.py'
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', config))
    if opts:
        p = argparse.ArgumentParser(); p.add_argument('--o', nargs='+', action=DictAction)
        cfg.merge_from_dict(p.parse_args(['--o', *opts]).o)
    init_default_scope('ditask_mm'); torch.manual_seed(0)
    m = MODELS.build(cfg.model); m.train()
    b = random_batch(m.tasks, 2, 448)
    opt = OptimWrapper(torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4))
    m.train_step(copy.deepcopy(b), opt)
    ts = []
    for _ in range(2):
        t = time.perf_counter(); m.train_step(copy.deepcopy(b), opt); ts.append(time.perf_counter() - t)
    print(f'{name:<28} {1000*statistics.median(ts):7.0f} ms', flush=True)
