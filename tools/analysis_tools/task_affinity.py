#!/usr/bin/env python
"""Measure the gradient affinity between tasks at each backbone stage and propose task groups.

Runs ``--iters`` training batches of the config's train dataloader through the
model (train mode, no optimizer step, the model unchanged), computes per batch
the cosine between every two tasks' loss gradients on each stage's shared
adapter parameters (all trainable stage parameters without adapters), and
averages them. Writes ``affinity.json`` and ``affinity.png`` into ``--out``,
proposes per stage groups of tasks (average-linkage clustering of
``1 − affinity``) and, with ``--write-config``, a config that trains with them
(``model.backbone.task_groups`` and ``branch_mode``). See
:mod:`ditask_mm.analysis.task_affinity`.

Examples::

    # at the start of training (the config's initial weights), 4 stages of 1, 1, 2 and 4 groups
    python tools/analysis_tools/task_affinity.py CONFIG --iters 50 --out work_dirs/affinity \\
        --num-groups 1 1 2 4 --write-config configs/ditask/my_groups.py
    # from a (full or adapter-only) checkpoint, tree-shaped groups, 2 processes over gloo on CPU
    torchrun --nproc_per_node 2 tools/analysis_tools/task_affinity.py CONFIG --checkpoint CKPT --iters 50 \\
        --out work_dirs/affinity --mode tree --launcher pytorch
"""
import argparse
import os
import os.path as osp
import shlex
import sys
from typing import List, Optional, Sequence

import ditask_mm  # noqa: F401  (compat patches before anything imports mmseg.models)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Gradient affinity between tasks per backbone stage, and task groups')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--checkpoint', help='full or adapter-only checkpoint; default: the config\'s initial weights')
    parser.add_argument('--iters', type=int, required=True, help='training batches to average over (per process)')
    parser.add_argument('--out', required=True, help='folder for affinity.json and affinity.png')
    parser.add_argument('--num-groups', type=int, nargs='+',
                        help='groups per stage: one value for every stage, or one per stage')
    parser.add_argument('--threshold', type=float, nargs='+',
                        help='merge groups only while their average affinity is at least this (one value or one '
                             'per stage); default 0 when --num-groups is not given')
    parser.add_argument('--mode', choices=['side', 'tree'], default='side',
                        help="branch_mode: 'tree' makes each stage's groups refine the previous stage's")
    parser.add_argument('--write-config', help='write a config inheriting CONFIG with the proposed task_groups')
    parser.add_argument('--seed', type=int, help="random seed; default: the config's randomness.seed, else 0")
    parser.add_argument('--cfg-options', nargs='+', help='override settings: key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error(f'--iters {args.iters}: expected a positive number of batches')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def per_stage(values: Optional[Sequence], num_stages: int, flag: str) -> List:
    """One value per stage from ``--flag`` (one value for all stages, or one per stage)."""
    if values is None:
        return [None] * num_stages
    if len(values) == 1:
        return list(values) * num_stages
    if len(values) != num_stages:
        raise SystemExit(f'{flag} {" ".join(map(str, values))}: expected one value or {num_stages} (one per stage '
                         'of the backbone)')
    return list(values)


def format_matrix(matrix, tasks: Sequence[str]) -> str:
    """A ``T × T`` matrix as a text table with the task names on both axes."""
    width = max(7, *(len(t) for t in tasks))
    rows = [f'{t:>{width}}' + ''.join(f'{v:>{width + 1}.3f}' for v in r) for t, r in zip(tasks, matrix.tolist())]
    return '\n'.join([' ' * width + ''.join(f'{t:>{width + 1}}' for t in tasks), *rows])


def init_distributed(cfg, launcher: str) -> None:
    """The process group of ``--launcher pytorch``: gloo on CPU (docs/install.md's recipe), NCCL with CUDA."""
    if launcher == 'none':
        return
    from ditask_mm.engine import setup_cpu_distributed
    if not setup_cpu_distributed(cfg, launcher):  # False: CUDA is available
        from mmengine.dist import init_dist
        init_dist(launcher, backend='nccl')  # also selects the GPU of LOCAL_RANK


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from mmengine.dist import get_rank
    from mmengine.logging import print_log
    from mmengine.runner import Runner, set_random_seed

    from ditask_mm.analysis import (measure_task_affinity, propose_stage_groups, stage_shared_parameters,
                                    write_affinity_outputs, write_group_config)
    from ditask_mm.apis import init_model
    from ditask_mm.engine import shutdown_distributed
    from ditask_mm.engine.config_loading import load_run_config
    from ditask_mm.models.checkpoint_fit import CheckpointMismatchError
    from ditask_mm.models.checkpoint_file import CheckpointReadError
    from ditask_mm.models.model_checkpoint import PretrainedWeightsError

    if not osp.isfile(args.config):
        print(f'error: config {args.config}: no such file', file=sys.stderr)
        return 1
    cfg = load_run_config(args.config, args.cfg_options, args.launcher, work_dir=args.out)
    init_distributed(cfg, args.launcher)
    try:
        seed = args.seed if args.seed is not None else (cfg.get('randomness') or {}).get('seed')
        seed = 0 if seed is None else seed
        set_random_seed(seed)
        device = f'cuda:{os.environ["LOCAL_RANK"]}' if torch.cuda.is_available() else 'cpu'
        try:
            model = init_model(cfg, args.checkpoint, device=device)
        except (CheckpointMismatchError, CheckpointReadError, PretrainedWeightsError, FileNotFoundError) as err:
            print(f'error: {err}', file=sys.stderr)
            return 1
        stages = sorted(stage_shared_parameters(model.backbone))
        num_groups = per_stage(args.num_groups, len(stages), '--num-groups')
        thresholds = per_stage(args.threshold, len(stages), '--threshold')
        if any(not 1 <= g <= len(model.tasks) for g in args.num_groups or ()):
            raise SystemExit(f'--num-groups {" ".join(map(str, args.num_groups))}: each value must be 1 to '
                             f'{len(model.tasks)} (the number of tasks, {list(model.tasks)})')
        dataloader = Runner.build_dataloader(cfg.train_dataloader, seed=seed)
        result = measure_task_affinity(model, dataloader, args.iters, tasks=list(model.tasks))
        groups = propose_stage_groups(result, num_groups, thresholds, args.mode)
        for stage in sorted(result.matrices):
            print_log(f'[task affinity] stage {stage} ({result.parameters[stage]["num_parameters"]:,} '
                      f'{result.parameters[stage]["parameters"]} parameters), E[cos] over {result.iterations} '
                      f'batches x {result.world_size} rank(s):\n'
                      f'{format_matrix(result.matrices[stage], result.tasks)}\n'
                      f'  groups: {groups[stage]}', logger='current')
        if get_rank() == 0:
            words = sys.argv[1:] if argv is None else argv
            command = 'python tools/analysis_tools/task_affinity.py ' + ' '.join(shlex.quote(str(a)) for a in words)
            checkpoint = osp.abspath(args.checkpoint) if args.checkpoint else None
            metadata = dict(config=osp.abspath(args.config), checkpoint=checkpoint, mode=args.mode, seed=seed,
                            num_groups=args.num_groups, threshold=args.threshold, command=command)
            json_path, png_path = write_affinity_outputs(result, args.out, groups, metadata)
            print_log(f'[task affinity] wrote {json_path} and {png_path}', logger='current')
            if args.write_config:
                provenance = (f'task_groups proposed by gradient affinity ({args.mode} mode): {result.iterations} '
                              f'batches x {result.world_size} rank(s), seed {seed}\n{command}')
                write_group_config(args.write_config, args.config, [groups[s] for s in stages], args.mode,
                                   provenance)
                print_log(f'[task affinity] wrote {args.write_config}', logger='current')
    finally:
        shutdown_distributed()
    return 0


if __name__ == '__main__':
    sys.exit(main())
