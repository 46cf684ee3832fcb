#!/usr/bin/env python
"""Cost of warping every DiTASK spectrum of a model once: layer by layer vs batched.

A training step warps the spectrum of every path (shared and per task) of
every DiTASK layer. This script builds a config's model (no pretrained
weights) and measures, for the spectra alone (forward and backward to θ):

* ``per_layer``: one CPAB call per layer and path (``adapted_spectrum``);
* ``batched``: :func:`ditask_mm.adapters.compute_spectra`, one CPAB call per
  group of equal tessellation and spectrum length.

For each it reports the median wall time, the number of CPAB calls and the
number of operators dispatched (``torch.profiler``, top-level and nested).
On a GPU every dispatched compute operator is at least one kernel launch, so
the operator count bounds the launch overhead that the batching removes.

Example::

    python tools/benchmarks/bench_spectra.py configs/ditask/swin-t_pascal-mtl.py --device cpu --iters 5
"""
import argparse
import contextlib
import os
import statistics
import sys
import time

from bench_utils import build_model, write_json_atomic


def measure(args: argparse.Namespace) -> dict:
    """Time and count both ways of computing the spectra of ``args.config``'s model."""
    import torch
    from torch.profiler import profile

    from ditask_mm.adapters import DiTASKLinear, compute_spectra

    model = build_model(os.path.abspath(args.config), device=args.device)
    layers = [m for m in model.modules() if isinstance(m, DiTASKLinear)]
    if not layers:
        raise SystemExit(f'{args.config}: the model has no DiTASKLinear layer')
    for layer in layers:
        layer.svd.refresh(layer.weight)
    sync = torch.cuda.synchronize if args.device.startswith('cuda') else (lambda: None)

    def per_layer():
        return [layer.adapted_spectrum(task) for layer in layers for task, _, _ in layer.transform_paths()]

    def batched():
        return [values for spectra in compute_spectra(layers).values() for values in spectra.values()]

    result = dict(config=args.config, device=args.device, layers=len(layers),
                  paths=sum(len(layer.transform_paths()) for layer in layers), threads=torch.get_num_threads())
    for name, fn in (('per_layer', per_layer), ('batched', batched)):
        def step():
            sum(values.sum() for values in fn()).backward()
            sync()
        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1000)
        with profile() as prof, count_cpab_calls() as calls:
            step()
        result[name] = dict(ms=statistics.median(times), ops=sum(e.count for e in prof.key_averages()),
                            cpab_calls=len(calls))
    return result


@contextlib.contextmanager
def count_cpab_calls():
    """Collect one entry per ``CPAB1D.transform_sequence``/``transform_values`` call."""
    from ditask_mm.cpab import CPAB1D
    calls, originals = [], {}
    for name in ('transform_sequence', 'transform_values'):
        originals[name] = getattr(CPAB1D, name)

        def counted(self, *args, _original=originals[name], **kwargs):
            calls.append(self.tessellation_size)
            return _original(self, *args, **kwargs)
        setattr(CPAB1D, name, counted)
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(CPAB1D, name, original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--json', help='also write the result here')
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # mmengine logs to stdout; stdout holds the table
        result = measure(args)
    print(f"{args.config}: {result['layers']} DiTASK layers, {result['paths']} transforms "
          f"(device {args.device}, {result['threads']} threads)\n\n"
          '| spectra of one step (fwd + bwd) | ms (median) | CPAB calls | dispatched ops |\n|---|---|---|---|')
    for name in ('per_layer', 'batched'):
        r = result[name]
        print(f"| {name.replace('_', ' ')} | {r['ms']:.1f} | {r['cpab_calls']} | {r['ops']:,} |")
    print(f"\nBatched: {result['per_layer']['ops'] / result['batched']['ops']:.1f}× fewer dispatched ops, "
          f"{result['per_layer']['ms'] / result['batched']['ms']:.2f}× the speed.")
    if args.json:
        write_json_atomic(args.json, result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
