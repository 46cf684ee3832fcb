#!/usr/bin/env python
"""Train-step and inference time of a whole multi-task model from a config.

Builds the config's model (no pretrained weights: nothing is downloaded),
feeds random images and targets of every task, and measures:

* train step: data preprocessing, forward, backward and an AdamW step
  (``model.train_step``), with ``--amp`` under autocast;
* inference: ``model.test_step`` in eval mode (adapted weights cached after
  the first batch), and the same after ``merge_adapters`` (plain weights).

Peak memory is CUDA's max_memory_allocated on GPU and the peak RSS growth on
CPU. Example::

    python tools/benchmarks/bench_model.py configs/ditask/swin-t_pascal-mtl.py --batch 2 --img 448 --iters 3
"""
import argparse
import contextlib
import copy
import os
import sys

from bench_utils import build_model, random_batch, timed, write_json_atomic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--img', type=int, default=448)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', action='store_true', help='fp16 autocast (CUDA) for the train step')
    parser.add_argument('--json', help='also write the results here')
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # logs to stderr; stdout holds the table
        result = measure(args)
    print(f"| config | device | batch × size | train step (ms) | inference (ms) | merged inference (ms) |\n"
          f"|---|---|---|---|---|---|\n"
          f"| {args.config} | {args.device} ({result['threads']} threads) | {args.batch} × {args.img}² | "
          f"{result['train_step_ms']:.0f} | {result['inference_ms']:.0f} | {result['merged_inference_ms']:.0f} |")
    if args.json:
        write_json_atomic(args.json, result)
    return 0


def measure(args) -> dict:
    """Build the model and time the train step, inference and merged inference."""
    import torch
    import ditask_mm  # noqa: F401
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    from ditask_mm.adapters import merge_adapters

    model = build_model(os.path.abspath(args.config), device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith('cuda') else (lambda: None)
    batch = random_batch(model.tasks, args.batch, args.img)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    wrapper = AmpOptimWrapper(optimizer=optim) if args.amp else OptimWrapper(optimizer=optim)
    model.train()
    print(f'[bench_model] train step x{args.warmup + args.iters} ...', file=sys.stderr, flush=True)
    train_ms = timed(lambda: model.train_step(copy.deepcopy(batch), wrapper), args.iters, args.warmup, sync)
    model.eval()
    print(f'[bench_model] inference x{args.warmup + args.iters} ...', file=sys.stderr, flush=True)
    with torch.no_grad():
        infer_ms = timed(lambda: model.test_step(copy.deepcopy(batch)), args.iters, args.warmup, sync)
        merge_adapters(model)
        merged_ms = timed(lambda: model.test_step(copy.deepcopy(batch)), args.iters, args.warmup, sync)
    return dict(config=args.config, device=args.device, batch=args.batch, img=args.img, iters=args.iters,
                train_step_ms=train_ms, inference_ms=infer_ms, merged_inference_ms=merged_ms,
                threads=torch.get_num_threads(), torch=torch.__version__)


if __name__ == '__main__':
    sys.exit(main())
