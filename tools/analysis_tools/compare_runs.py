#!/usr/bin/env python
"""Print finished runs side by side: every metric (Δm first), trainable parameters, training time.

Each RUN is a ``metrics.json`` written by ``tools/test.py`` or a directory
holding one (``RUN/metrics.json`` or ``RUN/test/metrics.json``); with a
``RUN/train`` work dir (or ``RUN`` itself) the table adds the trainable
parameters of the config dumped there and the training time
(:mod:`ditask_mm.analysis.compare`). Writes ``comparison.json`` and
``comparison.md`` into ``--out-dir`` (default: the runs' common parent).

Example::

    python tools/analysis_tools/compare_runs.py work_dirs/main/ditask work_dirs/main/decoder-only \\
        --names DiTASK decoder-only
"""
import argparse
import contextlib
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description='Compare runs side by side')
    parser.add_argument('runs', nargs='+', help='run directories or metrics.json files (at least two)')
    parser.add_argument('--names', nargs='+', help='one column name per run (default: the directory names)')
    parser.add_argument('--out-dir', help='where comparison.json and comparison.md go (default: the runs\' '
                        'common parent directory)')
    parser.add_argument('--no-params', action='store_true', help='do not build the configs to count parameters')
    args = parser.parse_args()
    out_dir = args.out_dir or os.path.commonpath([os.path.dirname(os.path.abspath(r)) for r in args.runs])
    # building the models logs; keep stdout for the table
    with contextlib.redirect_stdout(sys.stderr):
        from ditask_mm.analysis import RunComparisonError, compare_runs
        try:
            result = compare_runs(args.runs, args.names, out_dir=out_dir, count_parameters=not args.no_params)
        except RunComparisonError as err:
            print(f'error: {err}', file=sys.stderr)
            return 1
    print(result['markdown'], end='')
    for run in result['runs']:
        print(f"{run['name']}: metrics {run['metrics_path']}" + (f", config {run['config']}" if run['config'] else ''))
    print(f'written: {os.path.join(out_dir, "comparison.json")}, {os.path.join(out_dir, "comparison.md")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
