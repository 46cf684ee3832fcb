#!/usr/bin/env python
"""Evaluate a ditask_mm checkpoint, with mmseg's command line.

Examples::

    python tools/test.py CONFIG CKPT
    python tools/test.py CONFIG CKPT --out work_dirs/x/predictions.pkl --show-dir work_dirs/x/panels
    python tools/test.py CONFIG CKPT --edge-png-dir work_dirs/x/edges  # then tools/analysis_tools/eval_edges.py
    tools/dist_test.sh CONFIG CKPT 8

Writes ``metrics.json`` (every task's metrics and Δm) into the work dir.
"""
import argparse
import json
import os
import os.path as osp
import sys

import ditask_mm  # noqa: F401  (compat patches before anything imports mmseg.models)


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a multi-task segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the metrics')
    parser.add_argument('--out', help='dump every prediction (and its ground truth) to this pickle file')
    parser.add_argument('--show-dir', help='write a prediction panel per image into this directory')
    parser.add_argument('--edge-png-dir', help='write each edge prediction as <image id>.png (8-bit, floor(255*p)) '
                        'into this directory, for tools/analysis_tools/eval_edges.py')
    parser.add_argument('--cfg-options', nargs='+', help='override settings: key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main() -> int:
    args = parse_args()
    from mmengine.dist import is_main_process

    from ditask_mm.engine import setup_cpu_distributed, shutdown_distributed
    from ditask_mm.engine.config_loading import load_run_config
    from ditask_mm.fileio import atomic_write_text
    from ditask_mm.registry import RUNNERS

    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint {args.checkpoint} does not exist')
    cfg = load_run_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
    if args.out:  # works with any number of evaluators (mmseg's --out crashes on a list)
        evaluators = [*evaluators, dict(type='AtomicDumpResults', out_file_path=args.out)]
    if args.edge_png_dir:
        if 'edge' not in cfg.get('tasks', ['edge']):
            raise SystemExit(f"--edge-png-dir: the run's tasks {list(cfg.tasks)} have no 'edge'; add it with "
                             f"--cfg-options \"tasks=[..., 'edge']\" or use a config with edges")
        evaluators = [*evaluators, dict(type='EdgePNGWriter', out_dir=args.edge_png_dir)]
    cfg.test_evaluator = evaluators
    if args.show_dir:
        cfg.setdefault('custom_hooks', [])
        cfg.custom_hooks = [*cfg.custom_hooks, dict(type='MultiTaskVisualizationHook', out_dir=args.show_dir)]
    if args.launcher != 'none':
        setup_cpu_distributed(cfg)
    import ditask_mm.engine  # noqa: F401
    runner = RUNNERS.build(cfg)
    try:
        metrics = runner.test()
        main_process = is_main_process()
    finally:
        shutdown_distributed()
    if main_process:
        os.makedirs(cfg.work_dir, exist_ok=True)
        path = osp.join(cfg.work_dir, 'metrics.json')
        atomic_write_text(json.dumps({k: float(v) for k, v in metrics.items()}, indent=2, sort_keys=True), path)
        print(f'metrics written to {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
