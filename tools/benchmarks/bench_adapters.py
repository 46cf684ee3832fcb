#!/usr/bin/env python
"""Forward+backward time and peak memory of one adapted linear layer per Swin-T shape.

Variants (each run in its own subprocess so peak memory is its own):

* ``ditask``: DiTASKLinear, tessellation 64, cached SVD (ours);
* ``ditask_per_call_svd``: the same with the SVD recomputed on every call
  (``bench_utils.per_call_svd_layer_class``): the public code's SVD cost,
  nothing else;
* ``public_ditask``: an emulation of everything the public DiTASK layer
  does per call in a block that is not the last of its stage
  (docs/fidelity.md): the SVD every call, a frozen ``W·x``
  whose result is discarded, and, for qkv, four task transforms (their SVDs
  and GEMMs) whose outputs are discarded;
* ``lora_r64``: LoRALinear, rank 64;
* ``mtlora``: MTLoRALinear shared path (rank 64, dropout 0.05, as the public
  MTLoRA tiny config; the task paths only exist in 4 of 12 blocks);
* ``frozen``: a plain frozen nn.Linear (input gradient only).

Workload: Swin-T's adapted matrices, one per (stage, layer): qkv (C→3C, split
into q/k/v for DiTASK), proj (C→C), fc1 (C→4C), fc2 (4C→C), C = 96·2^stage,
with as many tokens as a batch of ``--batch`` images at ``--img``² gives in
that stage (8×112² = 100,352 tokens in stage 1 at 448²). One iteration runs
forward and backward (the input requires grad, as inside a network) through
all 16 layers. Reported: median milliseconds per iteration and the peak
memory the iteration adds (CUDA: max_memory_allocated; CPU: peak RSS,
reset through /proc/self/clear_refs).

Example::

    python tools/benchmarks/bench_adapters.py --device cpu --iters 5
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Dict, List

from bench_utils import current_rss, peak_rss, per_call_svd_layer_class, reset_peak_rss, write_json_atomic

VARIANTS = ('ditask', 'ditask_per_call_svd', 'public_ditask', 'lora_r64', 'mtlora', 'frozen')


def swin_t_shapes(batch: int, img: int) -> List[Dict]:
    """The 16 (name, in, out, splits, tokens) records of Swin-T's adapted linears."""
    shapes = []
    for stage in range(4):
        dim = 96 * 2**stage
        tokens = batch * (img // 4 // 2**stage)**2
        for name, fan_in, fan_out, splits in (('qkv', dim, 3 * dim, 3), ('proj', dim, dim, 1),
                                              ('fc1', dim, 4 * dim, 1), ('fc2', 4 * dim, dim, 1)):
            shapes.append(dict(name=f'stage{stage + 1}.{name}', fan_in=fan_in, fan_out=fan_out,
                               splits=splits, tokens=tokens))
    return shapes


def public_ditask_layer(base, splits: int):
    """A DiTASKLinear doing the public layer's per-call work (see module doc)."""
    import torch.nn.functional as F

    class PublicDiTASKEmulation(per_call_svd_layer_class()):

        def forward(self, x, task=None):
            F.linear(x, self.weight, self.bias)  # public lora.py:228, result discarded
            out = super().forward(x)  # per-call SVD layer: SVD every call
            if self.num_splits == 3:  # qkv task transforms, computed and discarded
                for t in self.tasks:
                    super().forward(x, task=t)
            return out

    tasks = ['semseg', 'human_parts', 'sal', 'normals'] if splits == 3 else None
    return PublicDiTASKEmulation(base, tessellation_size=64, tasks=tasks, num_splits=splits,
                                 theta_init='kaiming', compute_mode='dense')


def build_layer(variant: str, fan_in: int, fan_out: int, splits: int, device: str):
    import torch.nn as nn

    from ditask_mm.adapters import DiTASKLinear, LoRALinear, MTLoRALinear
    base = nn.Linear(fan_in, fan_out).to(device)
    if variant == 'public_ditask':
        return public_ditask_layer(base, splits)
    if variant in ('ditask', 'ditask_per_call_svd'):
        layer_class = per_call_svd_layer_class() if variant == 'ditask_per_call_svd' else DiTASKLinear
        return layer_class(base, tessellation_size=64, num_splits=splits, theta_init='kaiming')
    if variant == 'lora_r64':
        return LoRALinear(base, rank=64)
    if variant == 'mtlora':
        return MTLoRALinear(base, rank=64, shared_scale=4.0, dropout=0.05)
    if variant == 'frozen':
        base.requires_grad_(False)
        return base
    raise KeyError(variant)


def run_worker(args) -> Dict:
    """Measure one variant in this process; returns the result record."""
    import torch

    import ditask_mm  # noqa: F401
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    shapes = swin_t_shapes(args.batch, args.img)
    layers, inputs, grads = [], [], []
    for shape in shapes:
        tokens = max(1, int(shape['tokens'] * args.token_scale))
        layers.append(build_layer(args.variant, shape['fan_in'], shape['fan_out'], shape['splits'],
                                  device).train())
        inputs.append(torch.randn(tokens, shape['fan_in'], device=device, requires_grad=True))
        grads.append(torch.randn(tokens, shape['fan_out'], device=device))

    def sync():
        if device.startswith('cuda'):
            torch.cuda.synchronize()

    def step():
        for layer, x, g in zip(layers, inputs, grads):
            x.grad = None
            for p in layer.parameters():
                p.grad = None
            layer(x).backward(g)

    for _ in range(args.warmup):
        step()
    sync()
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        base_mem = current_rss()
    times = []
    for _ in range(args.iters):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    peak = (torch.cuda.max_memory_allocated() if device.startswith('cuda') else peak_rss()) - base_mem
    svd_ms = None
    if args.variant == 'ditask':  # what one SVD of every layer costs: the per-call overhead
        sync()
        start = time.perf_counter()
        for layer in layers:
            layer.svd.refresh(layer.weight)
        sync()
        svd_ms = (time.perf_counter() - start) * 1000
    adapter_params = sum(p.numel() for layer in layers for p in layer.parameters() if p.requires_grad)
    return dict(variant=args.variant, device=device, ms_median=statistics.median(times),
                ms_min=min(times), iters=args.iters, peak_extra_mib=max(peak, 0) / 2**20, svd_ms=svd_ms,
                trainable_params=adapter_params, threads=torch.get_num_threads(),
                torch=torch.__version__)


def markdown_table(results: List[Dict]) -> str:
    by_name = {r['variant']: r for r in results}
    lines = ['| variant | ms / iteration (median) | vs frozen Linear | peak extra memory (MiB) | trainable params |',
             '|---|---|---|---|---|']
    frozen = by_name.get('frozen', {}).get('ms_median')
    for r in results:
        ratio = f"{r['ms_median'] / frozen:.2f}×" if frozen else 'n/a'
        lines.append(f"| {r['variant']} | {r['ms_median']:.1f} | {ratio} | {r['peak_extra_mib']:.0f} | "
                     f"{r['trainable_params']:,} |")
    if 'ditask' in by_name:
        d = by_name['ditask']['ms_median']
        lines.append('')
        if 'ditask_per_call_svd' in by_name:
            lines.append(f"Cached SVD speed-up over per-call SVD: "
                         f"{by_name['ditask_per_call_svd']['ms_median'] / d:.1f}× (target ≥ 10×).")
        if 'public_ditask' in by_name:
            lines.append(f"Speed-up over the public layer's per-call work: "
                         f"{by_name['public_ditask']['ms_median'] / d:.1f}×.")
        if by_name['ditask'].get('svd_ms'):
            lines.append(f"One SVD of all 16 matrices takes {by_name['ditask']['svd_ms']:.0f} ms here, so "
                         f"per-call SVD can cost at most {(d + by_name['ditask']['svd_ms']) / d:.1f}× the cached "
                         'layer at this token count.')
        if 'lora_r64' in by_name:
            lines.append(f"DiTASK time / LoRA r=64 time: {d / by_name['lora_r64']['ms_median']:.2f} "
                         f"(target ≤ 1.5).")
    return '\n'.join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--img', type=int, default=448)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: default)')
    parser.add_argument('--token-scale', type=float, default=1.0,
                        help='scale every token count (e.g. 0.01 for a quick smoke run)')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument('--json', help='write the results as JSON to this file')
    parser.add_argument('--variant', help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args()

    if args.variant:
        print(json.dumps(run_worker(args)))
        return 0
    if args.device.startswith('cuda'):
        import torch
        if not torch.cuda.is_available():
            parser.error('--device cuda requested but CUDA is not available')
    results = []
    passthrough = [f'--device={args.device}', f'--batch={args.batch}', f'--img={args.img}',
                   f'--iters={args.iters}', f'--warmup={args.warmup}', f'--threads={args.threads}',
                   f'--token-scale={args.token_scale}']
    for i, variant in enumerate(args.variants, 1):
        print(f'[{i}/{len(args.variants)}] {variant} ...', file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, f'--variant={variant}', *passthrough],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f'variant {variant} failed (exit {proc.returncode})')
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"    {record['ms_median']:.1f} ms, +{record['peak_extra_mib']:.0f} MiB", file=sys.stderr)
        results.append(record)
    print(f'device={args.device} batch={args.batch} img={args.img} iters={args.iters} '
          f'token_scale={args.token_scale} threads={results[0]["threads"]} torch={results[0]["torch"]}')
    print(markdown_table(results))
    if args.json:
        write_json_atomic(args.json, results)
    return 0


if __name__ == '__main__':
    sys.exit(main())
