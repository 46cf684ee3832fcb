#!/usr/bin/env python
"""Where the DiTASK training step goes: variants of the Swin-T PASCAL model, in one process.

All variants are built first; then ``--iters`` rounds each run one
``model.train_step`` (AdamW, fp32) of every variant in turn, and the median
per variant is reported with its FLOPs (``FlopCounterMode``: matmuls and
convolutions, forward and backward), at ``--batch`` × ``--img``²:

* ``paper``: configs/ditask/swin-t_pascal-mtl.py as shipped (main-path
  dropout 0.05 through :class:`~ditask_mm.adapters.ByteMaskDropout`);
* ``paper, torch dropout``: the same with ``nn.Dropout`` (before issue 7);
* ``clean``: no main-path dropout (configs/ditask/swin-t_pascal-mtl_clean.py);
* ``clean, spectra per layer``: every spectrum warped by its own CPAB call
  (``batched_spectra`` off, before issue 7);
* ``clean, dense`` / ``clean, factored``: one adapted product forced
  (``compute_mode``) instead of the per-layer choice;
* ``clean, no task branches``: shared adapters only (``task_layers=()``);
* ``full FT`` and ``full FT, branched``: the plain shared Swin-T, and
  DiTASK's task-branched architecture with merged weights, all trainable.

Interleaving the variants' steps in one process makes their differences
comparable even where the machine's speed drifts during the run.

Example::

    python tools/benchmarks/ablate_train_step.py --batch 2 --img 448 --iters 2
"""
import argparse
import contextlib
import copy
import statistics
import sys
import time
from typing import Callable, List, NamedTuple, Optional

from bench_utils import CLEAN, DITASK, build_model, count_flops, random_batch

FULL_FT = 'configs/baselines/full-ft_swin-t_pascal-mtl.py'


class Ablation(NamedTuple):
    """A model to time: config, overrides, an optional patch around the run, and whether to merge and train all."""
    name: str
    config: str
    options: List[str]
    patch: Optional[str] = None
    branched_full_ft: bool = False


ABLATIONS = (
    Ablation('paper', DITASK, []),
    Ablation('paper, torch dropout', DITASK, [], patch='torch_dropout'),
    Ablation('clean', CLEAN, []),
    Ablation('clean, spectra per layer', CLEAN, [], patch='per_layer_spectra'),
    Ablation('clean, dense', CLEAN, ['model.backbone.adapter.compute_mode=dense']),
    Ablation('clean, factored', CLEAN, ['model.backbone.adapter.compute_mode=factored']),
    Ablation('clean, no task branches', CLEAN, ['model.backbone.task_layers=()']),
    Ablation('full FT', FULL_FT, []),
    Ablation('full FT, branched', CLEAN, [], branched_full_ft=True),
)


@contextlib.contextmanager
def patched(name: Optional[str]):
    """Undo one issue-7 change for the span of a variant (``None``: nothing)."""
    import torch.nn as nn

    from ditask_mm.adapters import ditask
    from ditask_mm.models.segmentors import multitask_segmentor
    saved = []
    if name == 'torch_dropout':
        saved.append((ditask, 'ByteMaskDropout', ditask.ByteMaskDropout))
        ditask.ByteMaskDropout = nn.Dropout
    elif name == 'per_layer_spectra':
        # the segmentor's extract_feat is the one place that batches the spectra
        saved.append((multitask_segmentor, 'batched_spectra', multitask_segmentor.batched_spectra))
        multitask_segmentor.batched_spectra = lambda _: contextlib.nullcontext(0)
    elif name is not None:
        raise ValueError(f'unknown patch {name!r}')
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


def prepare(ablation: Ablation, args: argparse.Namespace) -> Callable[[], object]:
    """Build ``ablation``'s model and return a function running one training step of it."""
    import torch
    from mmengine.optim import OptimWrapper

    with patched(ablation.patch):
        model = build_model(ablation.config, ablation.options, 'cpu', branched_full_ft=ablation.branched_full_ft)
    model.train()
    batch = random_batch(model.tasks, args.batch, args.img)
    wrapper = OptimWrapper(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4))

    def step():
        with patched(ablation.patch):
            return model.train_step(copy.deepcopy(batch), wrapper)
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--img', type=int, default=448)
    parser.add_argument('--iters', type=int, default=3, help='rounds; each round runs one step of every variant')
    parser.add_argument('--only', nargs='+', help='run only the variants whose names contain one of these')
    args = parser.parse_args()
    chosen = [a for a in ABLATIONS if not args.only or any(key in a.name for key in args.only)]
    if not chosen:
        raise SystemExit(f'--only {args.only} matches no variant of {[a.name for a in ABLATIONS]}')
    steps, flops = [], []
    with contextlib.redirect_stdout(sys.stderr):  # mmengine logs to stdout; stdout holds the table
        for i, ablation in enumerate(chosen, 1):
            print(f'[{i}/{len(chosen)}] building {ablation.name}, warm-up step and FLOP count ...', flush=True)
            steps.append(prepare(ablation, args))
            steps[-1]()  # warm-up: SVDs, allocator
            flops.append(count_flops(steps[-1]))
        times: List[List[float]] = [[] for _ in chosen]
        for round_ in range(args.iters):
            print(f'round {round_ + 1}/{args.iters} ...', flush=True)
            for step, record in zip(steps, times):
                start = time.perf_counter()
                step()
                record.append((time.perf_counter() - start) * 1000)
    print(f'batch {args.batch} × {args.img}², median of {args.iters} interleaved rounds, CPU fp32\n\n'
          '| variant | train step (ms) | GFLOP / step |\n|---|---|---|')
    for ablation, record, count in zip(chosen, times, flops):
        print(f'| {ablation.name} | {statistics.median(record):.0f} | {count / 1e9:.1f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
