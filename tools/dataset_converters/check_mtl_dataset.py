"""Check an extracted PASCAL_MT or NYUD_MT tree before training on it.

Example::

    python tools/dataset_converters/check_mtl_dataset.py data/PASCAL_MT
    python tools/dataset_converters/check_mtl_dataset.py data/NYUD_MT --dataset nyud --tasks semseg depth

Prints, per split and task, how many ids have all their files and one decoded
sample's shape and dtype, and compares the split sizes with the full archives.
Exits 0 when the tree is usable (warnings such as a smaller split allowed),
1 with the problems when files are missing or unreadable. See
docs/datasets.md and :mod:`ditask_mm.datasets.tree_check`.
"""
import argparse
import sys
from typing import List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='the PASCAL_MT/ or NYUD_MT/ directory (a config\'s data_root)')
    parser.add_argument('--dataset', choices=('pascal', 'nyud'), default=None,
                        help='dataset kind (default: detected from the directories)')
    parser.add_argument('--tasks', nargs='+', default=None, help='tasks to check (default: all of the dataset)')
    parser.add_argument('--splits', nargs='+', default=None, help='splits to check (default: train val)')
    parser.add_argument('--sample', type=int, default=1,
                        help='files decoded per split, task and kind of source file (default 1)')
    parser.add_argument('--max-listed', type=int, default=5, help='missing paths listed per split and task')
    args = parser.parse_args(argv)
    if args.sample < 1 or args.max_listed < 1:
        parser.error('--sample and --max-listed must be at least 1')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from ditask_mm.datasets.tree_check import DatasetTreeError, check_dataset_tree

    try:
        report = check_dataset_tree(args.root, args.dataset, args.tasks, args.splits, sample=args.sample,
                                    max_listed=args.max_listed, raise_on_error=False)
    except (DatasetTreeError, KeyError, ValueError) as exc:
        print(f'error: {exc.args[0] if isinstance(exc, KeyError) else exc}', file=sys.stderr)
        return 1
    print(report.format())
    if not report.ok:
        print(f'\nerror: {report.error_message()}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
