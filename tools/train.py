#!/usr/bin/env python
"""Train a ditask_mm model, with mmseg's command line.

Examples::

    python tools/train.py configs/ditask/swin-t_pascal-mtl.py
    tools/dist_train.sh configs/ditask/swin-t_pascal-mtl.py 8          # torchrun, 8 processes
    python tools/train.py CONFIG --resume                              # from work_dir/last_checkpoint
    python tools/train.py CONFIG --resume work_dirs/x/epoch_10.pth     # from a given checkpoint

Without CUDA, ``--launcher pytorch`` runs on gloo (CPU distributed training).
"""
import argparse
import os
import os.path as osp
import sys

import ditask_mm  # noqa: F401  (compat patches before anything imports mmseg.models)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a multi-task segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from the latest checkpoint in the work dir, or from the given one')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (needs CUDA)')
    parser.add_argument('--cfg-options', nargs='+', action=None, help='override settings: key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args):
    from ditask_mm.engine.amp import resolve_amp
    from ditask_mm.engine.config_loading import load_run_config
    cfg = load_run_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    cfg = resolve_amp(cfg, args.amp)  # without CUDA: fp32 with OptimWrapper and one WARNING
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise SystemExit(f'--resume {args.resume}: no such checkpoint file')
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main() -> int:
    args = parse_args()
    cfg = build_cfg(args)
    from ditask_mm.engine import setup_cpu_distributed, shutdown_distributed
    from ditask_mm.registry import RUNNERS
    if args.launcher != 'none':
        setup_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg)  # CheckedRunner unless the config names another runner_type
    try:
        runner.train()
    finally:
        shutdown_distributed()
    return 0


if __name__ == '__main__':
    sys.exit(main())
