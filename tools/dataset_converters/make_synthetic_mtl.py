"""Write a small synthetic PASCAL_MT or NYUD_MT tree in the real on-disk layout.

Example::

    python tools/dataset_converters/make_synthetic_mtl.py --dataset pascal \\
        --out data/synthetic/PASCAL_MT --num-train 64 --num-val 32 --size 240 320 --seed 0

The tree is built in a temporary sibling directory and renamed into place.
A non-empty ``--out`` is refused unless ``--overwrite`` is given. See
docs/datasets.md and :mod:`ditask_mm.datasets.synthetic`.
"""
import argparse
import sys
import time
from collections import Counter
from typing import List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dataset', choices=('pascal', 'nyud'), required=True)
    parser.add_argument('--out', required=True, help='output dataset directory (e.g. data/PASCAL_MT)')
    parser.add_argument('--num-train', type=int, default=8)
    parser.add_argument('--num-val', type=int, default=8)
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help='base image size, varied by ±20%% per image (default: 240 320 for pascal, '
                        '480 640 for nyud)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true', help='replace a non-empty --out')
    args = parser.parse_args(argv)
    if args.num_train < 0 or args.num_val < 0 or args.num_train + args.num_val == 0:
        parser.error('--num-train and --num-val must be >= 0 and not both 0')
    if args.size is not None and min(args.size) < 8:
        parser.error('--size H W must be at least 8 x 8')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from ditask_mm.datasets import synthetic

    size = tuple(args.size) if args.size else ((240, 320) if args.dataset == 'pascal' else (480, 640))
    printed = set()

    def progress(done: int, total: int) -> None:
        tenth = done * 10 // total
        if tenth and tenth not in printed:
            printed.add(tenth)
            print(f'[{tenth * 10:3d}%] {done}/{total} images', flush=True)

    start = time.time()
    try:
        tree = synthetic.generate(args.dataset, args.out, args.num_train, args.num_val, size, args.seed,
                                  overwrite=args.overwrite, progress=progress, keep_targets=False)
    except FileExistsError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    heights, widths = zip(*(info['size'] for info in tree.info.values()))
    portrait = sum(h > w for h, w in zip(heights, widths))
    print(f'wrote {tree.dataset} tree to {tree.root} in {time.time() - start:.1f} s: '
          + ', '.join(f'{split} {len(ids)}' for split, ids in tree.splits.items())
          + f'; H {min(heights)}..{max(heights)}, W {min(widths)}..{max(widths)}, {portrait} portrait; '
          f'seed {args.seed}')
    if args.dataset == 'pascal':
        scenarios = Counter(info['scenario'] for info in tree.info.values())
        flagged = sum(info['has_human_parts'] for info in tree.info.values())
        voc12 = sum(info['voc12'] for info in tree.info.values())
        print(f'  {flagged} images with human parts, {voc12} VOC12 semseg files; scenarios: '
              + ', '.join(f'{k} {v}' for k, v in sorted(scenarios.items())))
    return 0


if __name__ == '__main__':
    sys.exit(main())
