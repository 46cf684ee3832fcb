#!/usr/bin/env python
"""Count a config's trainable parameters by group.

Groups: adapter parameters (shared, per task, and one row per task or task
group key such as ``semseg+human_parts``), the other trainable backbone
parameters, decode heads, and totals
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
from typing import Any, Dict, List, Tuple

#: Keys of :func:`ditask_mm.analysis.count_parameters` that ``--json`` prints, besides ``adapter_by_group``.
JSON_KEYS = ('backbone_trainable', 'adapter', 'decode_heads', 'total_trainable', 'total')


def parse_cfg_options(items: List[str]) -> Dict:
    """``['key=value', ...]`` as mmengine's ``DictAction`` reads them (lists, tuples, numbers, booleans)."""
    from mmengine.config import DictAction
    options = {}
    for item in items:
        key, value = item.split('=', 1)
        options[key] = DictAction._parse_iterable(value)
    return options


def json_summary(counts: Dict[str, Any]) -> Dict[str, Any]:
    """The ``--json`` object: :data:`JSON_KEYS` and ``adapter_by_group`` (``{task or group key: count}``)."""
    return {**{k: counts[k] for k in JSON_KEYS}, 'adapter_by_group': dict(counts['adapter_by_group'])}


def table_rows(counts: Dict[str, Any]) -> List[Tuple[str, int]]:
    """``(group label, parameters)`` rows of the table; one ``adapter, group KEY`` row per task or group key."""
    groups = [(f'adapter, group {key}', value) for key, value in counts['adapter_by_group'].items()]
    return [('adapter, shared', counts['adapter_shared']), ('adapter, per task', counts['adapter_task']), *groups,
            ('other backbone', counts['other_backbone']), ('backbone trainable', counts['backbone_trainable']),
            ('decode heads', counts['decode_heads']), ('total trainable', counts['total_trainable']),
            ('total (incl. frozen)', counts['total'])]


def format_table(config: str, counts: Dict[str, Any]) -> str:
    """The config's name and a Markdown table of :func:`table_rows`, one line each."""
    rows = table_rows(counts)
    width = max(22, *(len(name) for name, _ in rows))
    lines = [config, f"| {'group':<{width}} | {'parameters':>12} |", f"|{'-' * (width + 2)}|{'-' * 14}|"]
    lines += [f'| {name:<{width}} | {value:>12,} |' for name, value in rows]
    return '\n'.join(lines)


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
        print(json.dumps(json_summary(counts)))
    else:
        print(format_table(args.config, counts))
    return 0


if __name__ == '__main__':
    sys.exit(main())
