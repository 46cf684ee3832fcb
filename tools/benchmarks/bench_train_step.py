#!/usr/bin/env python
"""Training-step time and peak memory of whole models, side by side.

Each variant runs in its own subprocess (so peak memory is its own): build the
config's model (no pretrained weights), random images and targets of every
task, and time ``model.train_step`` (forward, backward, AdamW; fp16 AMP on
CUDA unless ``--no-amp``). Variants:

* ``ditask``: configs/ditask/swin-t_pascal-mtl.py (cached SVD);
* ``ditask_per_call_svd``: the same with the SVD recomputed every call;
* ``mtlora_r64``, ``lora_r4``, ``full_ft``, ``decoder_only``: the baselines.

For ``ditask`` it also times inference: the multi-task model (eval, trunk run
once for all tasks), the model with its adapters merged, and, as the
reference, one plain mmseg Swin-T forward (a single-task model's backbone).

Example::

    python tools/benchmarks/bench_train_step.py --batch 8 --img 448 --device cuda --iters 20
"""
import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_adapters import current_rss, peak_rss, reset_peak_rss, write_json_atomic  # noqa: E402
from bench_model import random_batch, timed  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS = {
    'ditask': ('configs/ditask/swin-t_pascal-mtl.py', []),
    'ditask_per_call_svd': ('configs/ditask/swin-t_pascal-mtl.py', ['model.backbone.adapter.recompute_svd=True']),
    'mtlora_r64': ('configs/baselines/mtlora-r64_swin-t_pascal-mtl.py', []),
    'lora_r4': ('configs/baselines/lora-r4_swin-t_pascal-mtl.py', []),
    'full_ft': ('configs/baselines/full-ft_swin-t_pascal-mtl.py', []),
    'decoder_only': ('configs/baselines/decoder-only_swin-t_pascal-mtl.py', []),
}


def worker(args) -> dict:
    import torch
    import ditask_mm  # noqa: F401
    from mmengine.config import Config, DictAction
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    from mmengine.registry import init_default_scope

    import ditask_mm.models  # noqa: F401
    from ditask_mm.adapters import merge_adapters
    from ditask_mm.registry import MODELS

    config, options = VARIANTS[args.variant]
    cfg = Config.fromfile(os.path.join(ROOT, config))
    if options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--o', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(['--o', *options]).o)
    init_default_scope('ditask_mm')
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device
    cuda = device.startswith('cuda')
    model = MODELS.build(cfg.model).to(device)
    batch = random_batch(model.tasks, args.batch, args.img)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    amp = cuda and not args.no_amp
    wrapper = AmpOptimWrapper(optimizer=optim, dtype='float16') if amp else OptimWrapper(optimizer=optim)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    model.train()
    step = lambda: model.train_step(copy.deepcopy(batch), wrapper)  # noqa: E731
    step()  # first step: lazy SVDs, allocator warm-up
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        base = current_rss()
    train_ms = timed(step, args.iters, max(args.warmup - 1, 0), sync)
    peak = (torch.cuda.max_memory_allocated() if cuda else peak_rss()) - base
    result = dict(variant=args.variant, config=config, options=options, device=device, amp=amp,
                  batch=args.batch, img=args.img, train_step_ms=train_ms, peak_extra_mib=max(peak, 0) / 2**20,
                  trainable=sum(p.numel() for p in params), threads=torch.get_num_threads())
    if args.variant == 'ditask':
        from mmseg.models.backbones import SwinTransformer
        model.eval()
        with torch.no_grad(), (torch.autocast('cuda', dtype=torch.float16) if amp else contextlib.nullcontext()):
            result['inference_ms'] = timed(lambda: model.test_step(copy.deepcopy(batch)), args.iters, args.warmup,
                                           sync)
            merge_adapters(model)
            result['merged_inference_ms'] = timed(lambda: model.test_step(copy.deepcopy(batch)), args.iters,
                                                  args.warmup, sync)
            plain = SwinTransformer(out_indices=(0, 1, 2, 3)).to(device)
            plain.eval()  # mmseg's SwinTransformer.train() returns None: no chaining
            images = torch.randn(args.batch, 3, args.img, args.img, device=device)
            result['single_swin_forward_ms'] = timed(lambda: plain(images), args.iters, args.warmup, sync)
    return result


def table(results) -> str:
    by = {r['variant']: r for r in results}
    full = by.get('full_ft', {}).get('train_step_ms')
    full_mem = by.get('full_ft', {}).get('peak_extra_mib')
    lines = ['| model | train step (ms) | vs full FT | peak extra memory (MiB) | vs full FT | trainable |',
             '|---|---|---|---|---|---|']
    for r in results:
        ratio = f"{r['train_step_ms'] / full:.2f}×" if full else 'n/a'
        mem = f"{r['peak_extra_mib'] / full_mem:.2f}×" if full_mem else 'n/a'
        lines.append(f"| {r['variant']} | {r['train_step_ms']:.0f} | {ratio} | {r['peak_extra_mib']:.0f} | {mem} | "
                     f"{r['trainable']:,} |")
    d = by.get('ditask')
    if d and 'inference_ms' in d:
        lines += ['', '| inference | ms per batch |', '|---|---|',
                  f"| multi-task DiTASK (4 tasks, trunk once) | {d['inference_ms']:.0f} |",
                  f"| multi-task DiTASK, adapters merged | {d['merged_inference_ms']:.0f} |",
                  f"| one plain mmseg Swin-T forward (single-task backbone) | {d['single_swin_forward_ms']:.0f} |",
                  '',
                  f"Multi-task inference / single Swin-T forward: "
                  f"{d['inference_ms'] / d['single_swin_forward_ms']:.2f}× (the multi-task figure includes the "
                  'four heads, preprocessing and post-processing).']
    return '\n'.join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--img', type=int, default=448)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=0)
    parser.add_argument('--no-amp', action='store_true')
    parser.add_argument('--json')
    parser.add_argument('--variant', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        with contextlib.redirect_stdout(sys.stderr):
            result = worker(args)
        print(json.dumps(result))
        return 0
    results = []
    passthrough = [f'--batch={args.batch}', f'--img={args.img}', f'--device={args.device}', f'--iters={args.iters}',
                   f'--warmup={args.warmup}', f'--threads={args.threads}'] + (['--no-amp'] if args.no_amp else [])
    for i, name in enumerate(args.variants, 1):
        print(f'[{i}/{len(args.variants)}] {name} ...', file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, f'--variant={name}', *passthrough],
                              capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f'variant {name} failed')
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"    {results[-1]['train_step_ms']:.0f} ms", file=sys.stderr, flush=True)
    print(f"device={args.device} batch={args.batch} img={args.img} iters={args.iters} "
          f"amp={results[0]['amp']} threads={results[0]['threads']}")
    print(table(results))
    if args.json:
        write_json_atomic(args.json, results)
    return 0


if __name__ == '__main__':
    sys.exit(main())
