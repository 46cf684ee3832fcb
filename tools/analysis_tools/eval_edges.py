#!/usr/bin/env python
"""Score a folder of edge PNGs (odsF, oisF, AP) against a dataset split, as SEISM users do.

The folder holds one 8-bit single-channel ``<image id>.png`` per image of the
split, with the values floor(255·p) (``tools/test.py --edge-png-dir DIR``
writes them). The ground truth is read from GT_ROOT by the package's dataset
classes, and the scoring is the online metric's
(:mod:`ditask_mm.evaluation.edge_folder`, ``docs/datasets.md`` M5).

Examples::

    python tools/analysis_tools/eval_edges.py work_dirs/run/edges data/PASCAL_MT --dataset pascal --workers 8
    python tools/analysis_tools/eval_edges.py work_dirs/run/edges data/NYUD_MT --dataset nyud --nms \\
        --out work_dirs/run/edges_metrics.json
    # a run of a paper config scored at 448x448: score against the ground truth resized the same way
    python tools/analysis_tools/eval_edges.py work_dirs/run/edges data/PASCAL_MT --dataset pascal --gt-size 448 448

Prints ``edge.odsF``, ``edge.oisF`` and ``edge.AP`` (percent, the keys of
``metrics.json``) on stdout (this process's logs and the progress bar go to
stderr) and writes them as JSON with ``--out`` (the same keys, so
``compare_runs.py`` takes the file). Exits with 1 and a message naming the
files for a folder that cannot be scored.
"""
import argparse
import contextlib
import json
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Score a folder of edge PNGs against a dataset split')
    parser.add_argument('pred_dir', help='folder of <image id>.png edge maps (8-bit, values floor(255*p))')
    parser.add_argument('gt_root', help='the dataset directory (PASCAL_MT or NYUD_MT layout)')
    parser.add_argument('--dataset', required=True, choices=['pascal', 'nyud'], help='layout and default tolerance')
    parser.add_argument('--split', default='val', help='split whose ids are scored (default: val)')
    parser.add_argument('--max-dist', type=float, help='matching tolerance as a fraction of the image diagonal '
                        '(default: 0.0075 for pascal, 0.011 for nyud)')
    parser.add_argument('--nms', action='store_true', help='apply the edge NMS before thresholding (InvPT family)')
    parser.add_argument('--workers', type=int, default=0, help='worker processes for the matching (default: 0)')
    parser.add_argument('--gt-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='resize the ground truth (nearest) to HxW, as a config that scores at a fixed size '
                        '(FixedResizeMTL(eval_at_resized=True)) does; default: the original size')
    parser.add_argument('--out', help='write the metrics to this JSON file')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # logs to stderr: stdout holds the metrics only
        import ditask_mm  # noqa: F401  (compat patches first)
        from ditask_mm.evaluation.edge_folder import score_edge_folder
        from ditask_mm.fileio import atomic_write_text
        try:
            metrics = score_edge_folder(args.pred_dir, args.gt_root, args.dataset, split=args.split,
                                        max_dist=args.max_dist, nms=args.nms, num_workers=args.workers,
                                        gt_size=args.gt_size, progress=not args.no_progress)
        except (ValueError, OSError, ImportError) as error:  # EdgeFolderError, MalformedFileError, missing files
            print(f'error: {error}', file=sys.stderr)
            return 1
        if args.out:
            atomic_write_text(json.dumps(metrics, indent=2, sort_keys=True), args.out)
    for key, value in metrics.items():
        print(f'{key} {value:.4f}')
    if args.out:
        print(f'metrics written to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
