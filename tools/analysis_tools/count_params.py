#!/usr/bin/env python
"""Count a config's trainable parameters by group.

Groups: adapter parameters (shared and per task), the other trainable
backbone parameters, decode heads, and totals. The model is built from the
config without loading pretrained weights (nothing is downloaded).

Example::

    python tools/analysis_tools/count_params.py configs/ditask/swin-t_pascal-mtl.py
    python tools/analysis_tools/count_params.py configs/ditask/swin-t_pascal-mtl.py --json
"""
import argparse
import contextlib
import json
import sys
from typing import Dict

import torch.nn as nn

HEAD_ATTRS = ('decode_heads', 'decode_head', 'auxiliary_head', 'heads')


def split_model(model: nn.Module):
    """Return ``(backbone, [head modules])`` of a segmentor or a bare backbone."""
    backbone = getattr(model, 'backbone', model)
    heads = [getattr(model, a) for a in HEAD_ATTRS if isinstance(getattr(model, a, None), nn.Module)]
    return backbone, heads


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Trainable-parameter counts by group.

    Returns:
        ``adapter_shared``, ``adapter_task``, ``adapter``,
        ``other_backbone``, ``backbone_trainable``, ``decode_heads``,
        ``total_trainable`` and ``total``.
    """
    from ditask_mm.adapters import adapter_layers
    backbone, heads = split_model(model)
    adapter_shared = adapter_task = 0
    adapter_ids = set()
    for _, layer in adapter_layers(backbone):
        for name, param in layer.adapter_parameters():
            adapter_ids.add(id(param))
            if param.requires_grad:
                if 'tasks' in name.split('.')[0]:
                    adapter_task += param.numel()
                else:
                    adapter_shared += param.numel()
    other = sum(p.numel() for p in backbone.parameters() if p.requires_grad and id(p) not in adapter_ids)
    decode = sum(p.numel() for h in heads for p in h.parameters() if p.requires_grad)
    return dict(adapter_shared=adapter_shared, adapter_task=adapter_task, adapter=adapter_shared + adapter_task,
                other_backbone=other, backbone_trainable=adapter_shared + adapter_task + other,
                decode_heads=decode,
                total_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                total=sum(p.numel() for p in model.parameters()))


def main() -> int:
    parser = argparse.ArgumentParser(description='Count trainable parameters of a config')
    parser.add_argument('config')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--cfg-options', nargs='+', default=[], help='key=value overrides')
    args = parser.parse_args()
    # logs go to stderr so that stdout holds only the table or the JSON object
    with contextlib.redirect_stdout(sys.stderr):
        counts = build_and_count(args)
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


def build_and_count(args) -> Dict[str, int]:
    """Build the config's model (no pretrained weights) and count it."""
    import ditask_mm  # noqa: F401  (compat patches before mmseg is imported)
    from mmengine.config import Config, DictAction
    from mmengine.registry import init_default_scope

    from ditask_mm.registry import MODELS
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        options = DictAction()
        opts = {}
        for item in args.cfg_options:
            key, value = item.split('=', 1)
            opts[key] = options._parse_iterable(value)
        cfg.merge_from_dict(opts)
    init_default_scope(cfg.get('default_scope', 'ditask_mm'))
    import ditask_mm.models  # noqa: F401
    return count_parameters(MODELS.build(cfg.model))


if __name__ == '__main__':
    sys.exit(main())
