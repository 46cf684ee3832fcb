#!/usr/bin/env python
"""Count a config's trainable parameters by group.

Groups: adapter parameters (shared and per task), the other trainable
backbone parameters, decode heads, and totals
(:func:`ditask_mm.analysis.count_parameters`). The model is built from the
config without loading pretrained weights (nothing is downloaded).

Example::

    python tools/analysis_tools/count_params.py configs/ditask/swin-t_pascal-mtl.py
    python tools/analysis_tools/count_params.py configs/ditask/swin-t_pascal-mtl.py --json
"""
import argparse
import contextlib
import json
import sys
from typing import Dict, List


def parse_cfg_options(items: List[str]) -> Dict:
    """``['key=value', ...]`` as mmengine's ``DictAction`` reads them (lists, tuples, numbers, booleans)."""
    from mmengine.config import DictAction
    options = {}
    for item in items:
        key, value = item.split('=', 1)
        options[key] = DictAction._parse_iterable(value)
    return options


def main() -> int:
    parser = argparse.ArgumentParser(description='Count trainable parameters of a config')
    parser.add_argument('config')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--cfg-options', nargs='+', default=[], help='key=value overrides')
    args = parser.parse_args()
    # logs go to stderr so that stdout holds only the table or the JSON object
    with contextlib.redirect_stdout(sys.stderr):
        from ditask_mm.analysis import count_parameters
        from ditask_mm.apis import init_model
        counts = count_parameters(init_model(args.config, cfg_options=parse_cfg_options(args.cfg_options),
                                             init_weights=False))
    if args.json:
        keys = ('backbone_trainable', 'adapter', 'decode_heads', 'total_trainable', 'total')
        print(json.dumps({k: counts[k] for k in keys}))
        return 0
    rows = [('adapter, shared', counts['adapter_shared']), ('adapter, per task', counts['adapter_task']),
            ('other backbone', counts['other_backbone']), ('backbone trainable', counts['backbone_trainable']),
            ('decode heads', counts['decode_heads']), ('total trainable', counts['total_trainable']),
            ('total (incl. frozen)', counts['total'])]
    print(f'{args.config}')
    print(f"| {'group':<22} | {'parameters':>12} |\n|{'-' * 24}|{'-' * 14}|")
    for name, value in rows:
        print(f'| {name:<22} | {value:>12,} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
