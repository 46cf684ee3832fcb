#!/usr/bin/env python
"""Training-step time, FLOPs and peak memory of whole models, side by side.

Each variant runs in its own subprocess (so peak memory is its own): build the
config's model (no pretrained weights: nothing is downloaded), random images
and targets of every task, and measure ``model.train_step`` (forward,
backward, AdamW; fp16 AMP on CUDA unless ``--no-amp``):

* the median step time over ``--iters`` steps, after one untimed first step
  (lazy SVDs, allocator warm-up) and ``--warmup`` - 1 more;
* the median process CPU time of the same steps (``time.process_time``: on
  a shared machine with ``--threads 1`` it is the step's cost without the
  waits for a core);
* the peak memory the timed steps add (CUDA: max_memory_allocated; CPU: peak
  RSS growth, reset through /proc/self/clear_refs);
* the trainable parameter count;
* the FLOPs of one more, untimed step, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` after the peak is read, and the
  achieved GFLOP/s (those FLOPs / the median step time). FlopCounterMode
  counts matmuls, convolutions and attention, forward and backward; it does
  not count element-wise ops (the AdamW update, norms, activations) nor
  ``linalg_svd`` and DiTASK's CPAB integration.

``--configs`` takes built-in variant names and config file paths, mixed (a
path runs unchanged under the name of its file stem). Built-in variants:

* ``ditask``: configs/ditask/swin-t_pascal-mtl.py (paper config: main-path
  dropout 0.05, kaiming θ), cached SVD;
* ``ditask_clean``: configs/ditask/swin-t_pascal-mtl_clean.py;
* ``ditask_per_call_svd``: ``ditask`` with the SVD recomputed every call, as
  the public code does (``bench_utils.PER_CALL_SVD_OPTION``);
* ``ditask_shared_only``: ``ditask_clean`` without task branches (shared
  adapters only, every task reads the shared stream): what the branches cost;
* ``ditask_clean_cp_branches``: ``ditask_clean`` with the branched blocks
  checkpointed (``with_cp_branches=True``): memory traded for time;
* ``ditask_progressive``, ``ditask_progressive_tree``: configs/ditask/
  swin-t_pascal-mtl_progressive{,-tree}.py (task groups per stage: stages
  1-2 shared, two groups in stage 3, one task per group in stage 4);
* ``progressive_lora``: configs/baselines/progressive-lora_swin-t_pascal-mtl.py
  (the progressive task-specific LoRA method);
* ``mtlora_r64``, ``lora_r4``, ``decoder_only``: the baselines;
* ``full_ft``: plain shared Swin-T, every weight trains;
* ``full_ft_branched``: the ``ditask_clean`` model with its adapters merged
  (``merge_adapters``: plain shared and per-task weights) and every
  parameter trainable, i.e. full fine-tuning of DiTASK's own task-branched
  architecture (the last block of each stage runs proj/fc1/fc2 once per
  task). It is the limit for DiTASK, which needs that backward plus one
  weight rebuild per adapted matrix;
* ``balance_fixed``, ``balance_uncertainty``, ``balance_dwa``, ``balance_famo``
  (loss-level: FixedWeights, UncertaintyWeighting, DWA, FAMO) and
  ``balance_pcgrad``, ``balance_mgda``, ``balance_cagrad``,
  ``balance_aligned_mtl``, ``balance_upgrad`` (gradient-level: PCGrad, MGDA,
  CAGrad, AlignedMTL, UPGrad): ``ditask_clean`` with
  ``model.loss_balancer=dict(type=...)`` (``bench_utils.BALANCER_VARIANTS``),
  each with its balancer's defaults. The timed ``model.train_step`` is the
  segmentor's, so a gradient-level balancer runs its own update
  (``balanced_update``: one backward pass per task over the shared
  parameters, the Jacobian, the aggregator's solve). When any of them runs, a
  second table gives their step time and peak memory against
  ``balance_fixed`` (``ditask_clean`` without it);
* ``inference``: eval mode, ``torch.no_grad()``, AMP on CUDA, with
  configs/ditask/swin-t_pascal-mtl.py: ``model.test_step`` of the multi-task
  model (trunk once for all four tasks), the same after ``merge_adapters``,
  each merged single-task DiTASK model of configs/ditask/single-task/ on a
  batch with only its task's targets (and their sum: four single-task models
  one after the other), and one plain mmseg ``SwinTransformer`` forward; with
  the FLOPs of one call of each (timed after max(``--warmup``, 1) calls, so
  the eval-mode adapted-weight cache is built).

The default runs every built-in variant. The table goes to stdout, progress
and logs to stderr; ``--json`` writes the records (a list) atomically.

Example::

    python tools/benchmarks/bench_train_step.py --configs ditask full_ft full_ft_branched inference \\
        --batch 8 --img 448 --device cuda --iters 20 --json train_step.json
    # the loss balancers on a shared CPU: read the CPU-time column of the second table
    python tools/benchmarks/bench_train_step.py --configs balance_fixed balance_dwa balance_pcgrad balance_upgrad \\
        --batch 2 --img 448 --device cpu --threads 1 --iters 2
"""
import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
from typing import Callable, Dict, List, NamedTuple, Sequence

from bench_utils import (BALANCER_VARIANTS, CLEAN, DITASK, PER_CALL_SVD_OPTION, PROGRESSIVE, PROGRESSIVE_TREE,
                         build_model, count_flops, current_rss, peak_rss, random_batch, reset_peak_rss, timed,
                         timed_wall_and_cpu, write_json_atomic)

INFERENCE = 'inference'


class Variant(NamedTuple):
    """One thing to train: a name, a config, config overrides, and whether to merge and train everything."""
    name: str
    config: str
    options: List[str]
    branched_full_ft: bool = False


VARIANTS = {v.name: v for v in (
    Variant('ditask', DITASK, []),
    Variant('ditask_clean', CLEAN, []),
    Variant('ditask_per_call_svd', DITASK, [PER_CALL_SVD_OPTION]),
    Variant('ditask_shared_only', CLEAN, ['model.backbone.task_layers=()']),
    Variant('ditask_clean_cp_branches', CLEAN, ['model.backbone.with_cp_branches=True']),
    Variant('ditask_progressive', PROGRESSIVE, []),
    Variant('ditask_progressive_tree', PROGRESSIVE_TREE, []),
    Variant('progressive_lora', 'configs/baselines/progressive-lora_swin-t_pascal-mtl.py', []),
    Variant('mtlora_r64', 'configs/baselines/mtlora-r64_swin-t_pascal-mtl.py', []),
    Variant('lora_r4', 'configs/baselines/lora-r4_swin-t_pascal-mtl.py', []),
    Variant('full_ft', 'configs/baselines/full-ft_swin-t_pascal-mtl.py', []),
    Variant('full_ft_branched', CLEAN, [], branched_full_ft=True),
    Variant('decoder_only', 'configs/baselines/decoder-only_swin-t_pascal-mtl.py', []),
    *(Variant(name, CLEAN, [f'model.loss_balancer.type={balancer}']) for name, balancer in BALANCER_VARIANTS.items()),
)}
SINGLE_TASK = {task: f'configs/ditask/single-task/swin-t_pascal-{task.replace("_", "-")}.py'
               for task in ('semseg', 'human_parts', 'sal', 'normals')}


def resolve(token: str) -> Variant:
    """The variant a ``--configs`` entry names: a built-in name or a config file path.

    Args:
        token: A key of ``VARIANTS``, ``'inference'``, or a config path.

    Returns:
        The variant; a path's is named by its file stem, with no overrides.

    Raises:
        ValueError: ``token`` is neither a known name nor an existing file.
    """
    if token == INFERENCE:
        return Variant(INFERENCE, DITASK, [])
    if token in VARIANTS:
        return VARIANTS[token]
    if os.path.isfile(token):
        path = os.path.abspath(token)
        return Variant(os.path.splitext(os.path.basename(path))[0], path, [])
    raise ValueError(f'{token!r} is neither a variant ({", ".join([*VARIANTS, INFERENCE])}) nor a config file')


def train_worker(args: argparse.Namespace, variant: Variant) -> Dict:
    """Measure one variant's training step in this process.

    Args:
        args: The parsed command line (batch, img, device, iters, warmup, no_amp).
        variant: What to build.

    Returns:
        The result record (JSON-serialisable).
    """
    import torch
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    device = args.device
    cuda = device.startswith('cuda')
    model = build_model(variant.config, variant.options, device, branched_full_ft=variant.branched_full_ft)
    model.train()
    batch = random_batch(model.tasks, args.batch, args.img)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    amp = cuda and not args.no_amp
    wrapper = AmpOptimWrapper(optimizer=optim, dtype='float16') if amp else OptimWrapper(optimizer=optim)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    step = lambda: model.train_step(copy.deepcopy(batch), wrapper)  # noqa: E731
    first_log = step()  # first step: lazy SVDs, allocator warm-up
    sync()
    balancer = getattr(model, 'loss_balancer', None)
    balance_log = {key: float(value) for key, value in first_log.items() if key.startswith('balance.')}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        peak_reset = True
    else:
        peak_reset = reset_peak_rss()
        base = current_rss()
    train_ms, train_cpu_ms = timed_wall_and_cpu(step, args.iters, max(args.warmup - 1, 0), sync)
    peak = (torch.cuda.max_memory_allocated() if cuda else peak_rss()) - base
    flops = count_flops(step)  # after the peak is read: the counter's overhead is not in it
    return dict(variant=variant.name, config=variant.config, options=variant.options,
                branched_full_ft=variant.branched_full_ft, device=device, amp=amp, batch=args.batch, img=args.img,
                iters=args.iters, train_step_ms=train_ms, train_step_cpu_ms=train_cpu_ms,
                peak_extra_mib=max(peak, 0) / 2**20,
                peak_reset=peak_reset, trainable=sum(p.numel() for p in params), flops_per_step=flops,
                gflop_per_s=flops / 1e9 / (train_ms / 1000), threads=torch.get_num_threads(),
                torch=torch.__version__, loss_balancer=type(balancer).__name__ if balancer is not None else None,
                balancer_kind=getattr(balancer, 'kind', None), balance_log=balance_log)


def inference_worker(args: argparse.Namespace) -> Dict:
    """Measure multi-task, merged, single-task and plain-Swin inference in this process.

    Args:
        args: The parsed command line.

    Returns:
        The ``inference`` record: ``{name: {ms, images_per_s, gflop}}`` under
        ``models``, the single-task ones under ``single_task``, and ``ratios``.
    """
    import torch
    from mmseg.models.backbones import SwinTransformer

    from ditask_mm.adapters import merge_adapters
    device = args.device
    cuda = device.startswith('cuda')
    amp = cuda and not args.no_amp
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def measure(fn: Callable[[], object]) -> Dict:
        with torch.no_grad(), (torch.autocast('cuda', dtype=torch.float16) if amp else contextlib.nullcontext()):
            ms = timed(fn, args.iters, max(args.warmup, 1), sync)
            flops = count_flops(fn)
        return dict(ms=ms, images_per_s=args.batch * 1000 / ms, gflop=flops / 1e9)

    def test_step_of(model) -> Callable[[], object]:
        batch = random_batch(model.tasks, args.batch, args.img)  # only the model's tasks' targets
        return lambda: model.test_step(copy.deepcopy(batch))

    models, single = {}, {}
    model = build_model(DITASK, [], device).eval()
    models['multi_task'] = measure(test_step_of(model))
    merge_adapters(model)
    models['multi_task_merged'] = measure(test_step_of(model))
    for task, config in SINGLE_TASK.items():
        model = build_model(config, [], device)  # the previous model is freed here
        if tuple(model.tasks) != (task,):
            raise ValueError(f'{config} holds tasks {model.tasks}, expected ({task!r},)')
        merge_adapters(model)
        model.eval()
        single[task] = measure(test_step_of(model))
    del model
    total_ms = sum(r['ms'] for r in single.values())
    models['single_task_sum'] = dict(ms=total_ms, images_per_s=args.batch * 1000 / total_ms,
                                     gflop=sum(r['gflop'] for r in single.values()))
    torch.manual_seed(0)
    plain = SwinTransformer(out_indices=(0, 1, 2, 3)).to(device)
    plain.eval()  # mmseg's SwinTransformer.train() returns None: no chaining
    images = torch.randn(args.batch, 3, args.img, args.img, device=device)
    models['plain_swin_forward'] = measure(lambda: plain(images))
    mt, merged, swin, total = (models[k] for k in ('multi_task', 'multi_task_merged', 'plain_swin_forward',
                                                   'single_task_sum'))
    mean_single = statistics.mean(r['ms'] for r in single.values())
    ratios = dict(mt_vs_single_task_mean=mt['ms'] / mean_single,
                  merged_vs_single_task_mean=merged['ms'] / mean_single,
                  mt_vs_single_task_sum=mt['ms'] / total['ms'], merged_vs_single_task_sum=merged['ms'] / total['ms'],
                  mt_vs_plain_swin=mt['ms'] / swin['ms'], mt_flops_vs_plain_swin=mt['gflop'] / swin['gflop'],
                  mt_flops_vs_single_task_sum=mt['gflop'] / total['gflop'])
    return dict(variant=INFERENCE, config=DITASK, device=device, amp=amp, batch=args.batch, img=args.img,
                iters=args.iters, models=models, single_task=single, ratios=ratios,
                threads=torch.get_num_threads(), torch=torch.__version__)


def worker(args: argparse.Namespace) -> Dict:
    """Run the measurement ``args.variant`` names, in this process."""
    import torch

    import ditask_mm  # noqa: F401
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant == INFERENCE:
        return inference_worker(args)
    return train_worker(args, resolve(args.variant))


def ratio(value: float, reference) -> str:
    """``value / reference`` as ``1.23×``, or ``n/a`` without a reference."""
    return f'{value / reference:.2f}×' if reference else 'n/a'


def train_table(results: Sequence[Dict]) -> str:
    """The markdown table of the training records, with ratios to the full-FT references."""
    by = {r['variant']: r for r in results}
    full, branched = by.get('full_ft', {}), by.get('full_ft_branched', {})
    lines = ['| model | train step (ms) | vs full FT | vs full FT, same branched arch | GFLOP / step | '
             'FLOPs vs full FT | GFLOP/s | peak extra memory (MiB) | memory vs full FT | trainable |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for r in results:
        ms = r['train_step_ms']
        lines.append(f"| {r['variant']} | {ms:.0f} | {ratio(ms, full.get('train_step_ms'))} | "
                     f"{ratio(ms, branched.get('train_step_ms'))} | {r['flops_per_step'] / 1e9:.1f} | "
                     f"{ratio(r['flops_per_step'], full.get('flops_per_step'))} | {r['gflop_per_s']:.1f} | "
                     f"{r['peak_extra_mib']:.0f} | {ratio(r['peak_extra_mib'], full.get('peak_extra_mib'))} | "
                     f"{r['trainable']:,} |")
    return '\n'.join(lines)


def balancer_table(results: Sequence[Dict]) -> str:
    """The markdown table of the ``balance_*`` and ``ditask_clean`` records, against ``balance_fixed`` (else
    ``ditask_clean``).

    Besides the wall time it gives the process CPU time of the step (robust
    to other processes on the machine, with ``--threads 1``) and the FLOPs.
    """
    by = {r['variant']: r for r in results}
    reference_name = 'balance_fixed' if 'balance_fixed' in by else 'ditask_clean'
    reference = by.get(reference_name, {})
    lines = [f'| variant | balancer | train step (ms) | vs {reference_name} | CPU time / step (ms) | '
             f'vs {reference_name} | GFLOP / step | vs {reference_name} | peak extra memory (MiB) | '
             f'vs {reference_name} |', '|---|---|---|---|---|---|---|---|---|---|']
    for r in results:
        if r['variant'] not in BALANCER_VARIANTS and r['variant'] != 'ditask_clean':
            continue
        cells = [r['variant'], BALANCER_VARIANTS.get(r['variant'], 'none')]
        for key, scale in (('train_step_ms', 1), ('train_step_cpu_ms', 1), ('flops_per_step', 1e9),
                           ('peak_extra_mib', 1)):
            value = r.get(key)
            if value is None:  # a record of an older version of this script
                cells += ['n/a', 'n/a']
                continue
            cells += [f'{value / scale:.0f}' if scale == 1 else f'{value / scale:.1f}',
                      ratio(value, reference.get(key))]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def inference_table(record: Dict) -> str:
    """The markdown inference table and ratio lines of the ``inference`` record."""
    models, single, q = record['models'], record['single_task'], record['ratios']
    rows = [('multi-task DiTASK (4 tasks, trunk once)', models['multi_task']),
            ('multi-task DiTASK, adapters merged', models['multi_task_merged'])]
    rows += [(f'single-task DiTASK, {task}, merged', r) for task, r in single.items()]
    rows += [('four single-task models, one after the other', models['single_task_sum']),
             ('one plain mmseg Swin-T forward (backbone only)', models['plain_swin_forward'])]
    lines = ['| inference | ms per batch | images/s | GFLOP per batch |', '|---|---|---|---|']
    lines += [f"| {name} | {r['ms']:.0f} | {r['images_per_s']:.1f} | {r['gflop']:.1f} |" for name, r in rows]
    lines += ['',
              f"Multi-task inference / one single-task model (mean of the four): {q['mt_vs_single_task_mean']:.2f}× "
              f"(merged: {q['merged_vs_single_task_mean']:.2f}×)",
              f"Multi-task inference / four single-task models, one after the other: "
              f"{q['mt_vs_single_task_sum']:.2f}× (merged: {q['merged_vs_single_task_sum']:.2f}×); "
              f"FLOPs {q['mt_flops_vs_single_task_sum']:.2f}×",
              f"Multi-task inference / one plain Swin-T forward: {q['mt_vs_plain_swin']:.2f}× time, "
              f"{q['mt_flops_vs_plain_swin']:.2f}× FLOPs (the multi-task figures include the four heads, "
              'preprocessing and post-processing)']
    return '\n'.join(lines)


def run_variant(token: str, passthrough: List[str]) -> Dict:
    """Run one variant in a subprocess and return its record (exits on failure)."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), f'--variant={token}', *passthrough],
                          capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f'variant {token} failed (exit status {proc.returncode})')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    """Parse the command line; run each variant in a subprocess, or, with ``--variant``, one here."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--configs', nargs='+', metavar='NAME_OR_CONFIG',
                        help=f'built-in variants ({", ".join([*VARIANTS, INFERENCE])}) and/or config files '
                             '(default: every built-in variant and the inference measurement)')
    parser.add_argument('--variants', nargs='+', dest='configs', help=argparse.SUPPRESS)  # old name
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--img', type=int, default=448)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--iters', type=int, default=5, help='timed steps (median)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps before them')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    parser.add_argument('--no-amp', action='store_true', help='fp32 on CUDA too')
    parser.add_argument('--json', help='also write the records here')
    parser.add_argument('--variant', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        with contextlib.redirect_stdout(sys.stderr):  # logs to stderr; stdout holds the record
            result = worker(args)
        print(json.dumps(result))
        return 0
    tokens = args.configs or [*VARIANTS, INFERENCE]
    try:
        names = [resolve(t).name for t in tokens]
    except ValueError as e:
        parser.error(str(e))
    tokens = [t if t == INFERENCE or t in VARIANTS else os.path.abspath(t) for t in tokens]
    passthrough = [f'--batch={args.batch}', f'--img={args.img}', f'--device={args.device}', f'--iters={args.iters}',
                   f'--warmup={args.warmup}', f'--threads={args.threads}'] + (['--no-amp'] if args.no_amp else [])
    results = []
    for i, (token, name) in enumerate(zip(tokens, names), 1):
        print(f'[{i}/{len(tokens)}] {name} ...', file=sys.stderr, flush=True)
        r = run_variant(token, passthrough)
        results.append(r)
        if name == INFERENCE:
            m = r['models']
            print(f"    multi-task {m['multi_task']['ms']:.0f} ms, {m['multi_task']['gflop']:.1f} GFLOP; "
                  f"four single-task {m['single_task_sum']['ms']:.0f} ms", file=sys.stderr, flush=True)
        else:
            print(f"    {r['train_step_ms']:.0f} ms, {r['flops_per_step'] / 1e9:.1f} GFLOP", file=sys.stderr,
                  flush=True)
    print(f"device={args.device} batch={args.batch} img={args.img} iters={args.iters} warmup={args.warmup} "
          f"amp={results[0]['amp']} threads={results[0]['threads']} torch={results[0]['torch']}")
    train = [r for r in results if r['variant'] != INFERENCE]
    if train:
        print()
        print(train_table(train))
    if any(r['variant'] in BALANCER_VARIANTS for r in train):
        print()
        print(balancer_table(train))
    for r in results:
        if r['variant'] == INFERENCE:
            print()
            print(inference_table(r))
    if args.json:
        write_json_atomic(args.json, results)
    return 0


if __name__ == '__main__':
    sys.exit(main())
