#!/usr/bin/env python
"""Time per image of the edge metric (odsF/oisF/AP, ``EdgeODSEvaluator``) on realistic predictions.

The cost of the BSDS matching depends on how many pixels a threshold keeps,
so uniform noise (every threshold keeps a different, scattered mask) is the
worst case and says little about a trained model. This script scores
predictions that look like an edge detector's output instead: the ground-truth
edges of a generated image (``ditask_mm.datasets.synthetic``: PASCAL edges
from the LabelMap as the dataset computes them, NYUD edges from the ``.npy``
map), blurred with a Gaussian, plus smooth (spatially correlated) noise, squashed to [0, 1].

For every size and mode it reports the wall time per image (and, in
process, the CPU time, which other load on the machine does not stretch) of

* ``workers=0``: :meth:`EdgeODSEvaluator.image_stats`, image after image in
  this process;
* ``workers=N``: :meth:`EdgeODSEvaluator.batch_stats` on the whole set with
  ``num_workers=N`` (the images are scored in N spawned processes; the pool
  is started before the timing, as in an evaluation after its first batch),

with and without the edge NMS, and the implied time of the PASCAL-Context
(5,105) and NYUD-v2 (654) validation sets.

Example::

    python tools/benchmarks/bench_edge_metric.py --images 3 --workers 0 2 --json edge_metric.json
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np

from bench_utils import write_json_atomic

#: name -> (dataset generated, (H, W) generated (varied by ±20 %, some portrait), (H, W) scored: the generated
#: edges are resized to it, nearest-neighbour). The online evaluation scores at 448² (``eval_at_resized``).
SIZES = {
    'pascal_375x500': ('pascal', (375, 500), (375, 500)),
    'pascal_448x448_as_evaluated': ('pascal', (375, 500), (448, 448)),
    'nyud_480x640': ('nyud', (480, 640), (480, 640)),
    'nyud_448x448_as_evaluated': ('nyud', (480, 640), (448, 448)),
}
#: Correlation length (Gaussian sigma, pixels) of the prediction noise.
NOISE_SIGMA = 2.0
#: The blurred ground truth b in [0, 1] becomes sigmoid(LOGIT_SCALE * (b - LOGIT_CENTRE + noise)): about 0.03 far
#: from edges, 0.998 on them.
LOGIT_SCALE = 10.0
LOGIT_CENTRE = 0.35
#: Validation images of each dataset (docs/datasets.md).
VAL_IMAGES = dict(pascal=5105, nyud=654)
#: The matching tolerance of each dataset's protocol.
MAX_DIST = dict(pascal=0.0075, nyud=0.011)


def ground_truth_edges(dataset: str, size: Tuple[int, int], count: int, seed: int) -> List[np.ndarray]:
    """Edge maps ({0, 1} float32, shape (H, W) near ``size``) of ``count`` generated images."""
    from ditask_mm.datasets.synthetic import generate
    from ditask_mm.datasets.transforms.loading import label_map_edges

    with tempfile.TemporaryDirectory() as tmp:
        tree = generate(dataset, os.path.join(tmp, dataset), num_train=0, num_val=count, size=size, seed=seed)
    ids = tree.splits['val']
    if dataset == 'pascal':
        return [label_map_edges(tree.targets[i]['label_map']) for i in ids]
    return [np.asarray(tree.targets[i]['edge'], np.float32) for i in ids]


def realistic_prediction(edges: np.ndarray, rng: np.random.Generator, sigma: float, noise: float) -> np.ndarray:
    """A detector-like edge probability map: blurred ground truth plus smooth noise, squashed to [0, 1] (float32)."""
    import cv2

    blurred = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), sigmaX=sigma)
    blurred /= max(float(blurred.max()), 1e-6)
    # spatially correlated noise (a network's errors are smooth, not independent per pixel), of std ``noise``
    field = cv2.GaussianBlur(rng.normal(0.0, 1.0, edges.shape).astype(np.float32), (0, 0), sigmaX=NOISE_SIGMA)
    field *= noise / max(float(field.std()), 1e-6)
    logits = LOGIT_SCALE * (blurred - LOGIT_CENTRE + field)
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def resize_nearest(array: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """``array`` resized to (H, W) ``size`` with nearest-neighbour sampling (as the evaluation resizes labels)."""
    import cv2

    return cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def time_per_image(pairs: List[Tuple[np.ndarray, np.ndarray]], max_dist: float, nms: bool,
                   workers: int) -> Dict[str, object]:
    """Wall seconds per image (median over images, or the set's mean for ``workers > 0``) and CPU seconds.

    The CPU time of this process (``workers=0`` only) is the number to trust on
    a shared machine: other processes stretch the wall time, not the CPU time.
    """
    from ditask_mm.evaluation.metrics.edge_ods import EdgeODSEvaluator

    evaluator = EdgeODSEvaluator(max_dist=max_dist, nms=nms, num_workers=workers)
    try:
        if workers == 0:
            wall, cpu = [], []
            for pred, gt in pairs:
                start, start_cpu = time.perf_counter(), time.process_time()
                evaluator.image_stats(pred, gt)
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            return dict(s_per_image=statistics.median(wall), cpu_s_per_image=statistics.median(cpu), seconds=wall)
        evaluator.batch_stats(pairs[:2])  # start the pool and import pyEdgeEval in the workers, untimed
        start = time.perf_counter()
        evaluator.batch_stats(pairs)
        per_image = (time.perf_counter() - start) / len(pairs)
        return dict(s_per_image=per_image, cpu_s_per_image=None, seconds=[per_image])
    finally:
        evaluator.close()


def measure(args: argparse.Namespace) -> List[Dict]:
    """One record per (size, NMS, workers)."""
    records = []
    for name in args.sizes:
        dataset, generated, scored = SIZES[name]
        rng = np.random.default_rng(args.seed)
        edges = ground_truth_edges(dataset, generated, args.images, args.seed)
        edges = [resize_nearest(e, scored) for e in edges]
        pairs = [(realistic_prediction(e, rng, args.sigma, args.noise), e) for e in edges]
        shape = f'{scored[0]}x{scored[1]}'
        for nms in args.nms:
            for workers in args.workers:
                timing = time_per_image(pairs, MAX_DIST[dataset], nms, workers)
                per_image = timing['s_per_image']
                record = dict(size=name, dataset=dataset, shape=shape, nms=nms, workers=workers,
                              images=len(pairs), **timing, val_images=VAL_IMAGES[dataset],
                              val_hours=per_image * VAL_IMAGES[dataset] / 3600)
                records.append(record)
                print(f'{name} nms={nms} workers={workers}: {per_image:.2f} s/image', file=sys.stderr, flush=True)
    return records


def markdown(records: List[Dict]) -> str:
    lines = ['| size (H×W) | NMS | workers | wall s / image | CPU s / image | val set | val set time (wall) |',
             '|---|---|---|---|---|---|---|']
    for r in records:
        hours = r['val_hours']
        total = f'{hours:.1f} h' if hours >= 1 else f'{hours * 60:.0f} min'
        cpu = '–' if r['cpu_s_per_image'] is None else f"{r['cpu_s_per_image']:.2f}"
        lines.append(f"| {r['size']} ({r['shape']}) | {'on' if r['nms'] else 'off'} | {r['workers']} | "
                     f"{r['s_per_image']:.2f} | {cpu} | {r['val_images']} | {total} |")
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', nargs='+', default=list(SIZES), choices=list(SIZES))
    parser.add_argument('--images', type=int, default=3, help='generated images per size')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2], help='num_workers values to time')
    parser.add_argument('--nms', type=lambda s: s.lower() in ('1', 'true', 'on', 'yes'), nargs='+',
                        default=[False, True], help='NMS settings to time (off/on)')
    parser.add_argument('--sigma', type=float, default=1.5, help='Gaussian blur of the ground truth, in pixels')
    parser.add_argument('--noise', type=float, default=0.1, help='standard deviation of the noise, in probability')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', help='write the records here')
    args = parser.parse_args()
    if args.images < 1 or any(w < 0 for w in args.workers):
        parser.error('--images must be >= 1 and --workers >= 0')
    records = measure(args)
    print(markdown(records))
    if args.json:
        write_json_atomic(args.json, records)


if __name__ == '__main__':
    main()
