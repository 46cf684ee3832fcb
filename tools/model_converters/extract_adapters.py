#!/usr/bin/env python
"""Keep only what training changed: an adapter-only checkpoint.

Builds the config's model, loads the full checkpoint (it must fit the model
exactly), and writes, atomically, every parameter with ``requires_grad=True``
(θ, the backbone parts the config's trainable policy trains, the heads) plus
the heads' buffers (BatchNorm running statistics), but none of the frozen
pretrained weights::

    {'meta': {'kind': 'adapter_only', 'keys': N, 'config': ..., 'source': ...,
              'pretrained': PATH_OR_URL, 'frozen_digest': {...}},
     'state_dict': {...}}

``pretrained`` is the config's ``model.backbone.init_cfg`` checkpoint and
``frozen_digest`` a per-tensor sum and sum of squares of the frozen weights,
so that loading can check it sits on the weights it was trained on. With
``--with-training-state`` the file also keeps what ``--resume`` needs (epoch,
iteration, message hub, optimizer and scheduler states).

``tools/test.py``, ``tools/demo.py``, ``--resume`` and ``load_from`` accept
the file and put it on top of the config's pretrained weights
(:func:`ditask_mm.models.model_checkpoint.load_model_checkpoint`).

Example::

    python tools/model_converters/extract_adapters.py CONFIG work_dirs/x/best.pth --out work_dirs/x/adapters.pth
"""
import argparse
import os
import os.path as osp
import sys


def mb(path: str) -> float:
    return os.path.getsize(path) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description='Write an adapter-only checkpoint (trainable parameters and '
                                     'head buffers) from a full one')
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='full checkpoint of the config\'s model')
    parser.add_argument('--out', required=True, help='output file (.pth)')
    parser.add_argument('--with-training-state', action='store_true',
                        help='also keep the epoch, iteration, message hub, optimizer and scheduler states, so '
                             'that tools/train.py --resume can continue from the file')
    args = parser.parse_args()

    import ditask_mm  # noqa: F401  (compat patches first)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import ditask_mm.models  # noqa: F401
    from ditask_mm.fileio import atomic_torch_save
    from ditask_mm.models.adapter_checkpoint import (ADAPTER_ONLY, CheckpointMismatchError, adapter_state_dict,
                                                     check_full_checkpoint, split_checkpoint)
    from ditask_mm.models.checkpoint_file import CheckpointReadError, load_checkpoint_file
    from ditask_mm.models.model_checkpoint import frozen_digest, pretrained_checkpoint_of
    from ditask_mm.registry import MODELS

    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'ditask_mm'))
    model = MODELS.build(cfg.model)
    try:
        source = load_checkpoint_file(args.checkpoint)
        state_dict, source_meta = split_checkpoint(source, args.checkpoint)
        check_full_checkpoint(model, args.checkpoint, state_dict)
    except (CheckpointMismatchError, CheckpointReadError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    if source_meta.get('kind') == ADAPTER_ONLY:
        print(f'error: {args.checkpoint} is already adapter-only', file=sys.stderr)
        return 1
    model.load_state_dict(state_dict, strict=True)
    kept = {k: v.detach().cpu().clone() for k, v in adapter_state_dict(model).items()}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    meta = dict(kind=ADAPTER_ONLY, keys=len(kept), numel=sum(v.numel() for v in kept.values()),
                trainable_params=trainable, config=cfg.pretty_text, source=osp.abspath(args.checkpoint),
                source_meta={k: v for k, v in source_meta.items() if isinstance(v, (str, int, float, bool))},
                ditask_mm_version=ditask_mm.__version__, pretrained=pretrained_checkpoint_of(model),
                frozen_digest=frozen_digest(model, exclude=kept))
    checkpoint = dict(meta=meta, state_dict=kept)
    if args.with_training_state:
        missing = [k for k in ('message_hub', 'optimizer') if k not in source]
        if missing or 'epoch' not in source_meta:
            print(f'error: {args.checkpoint} holds no training state to keep ({missing or "meta.epoch"} missing)',
                  file=sys.stderr)
            return 1
        meta.update({k: source_meta[k] for k in ('epoch', 'iter', 'seed', 'dataset_meta', 'cfg') if k in source_meta})
        checkpoint.update({k: source[k] for k in ('message_hub', 'optimizer', 'param_schedulers') if k in source})
    atomic_torch_save(checkpoint, args.out)
    print(f'kept {len(kept)} of {len(state_dict)} tensors ({meta["numel"]:,} values; {trainable:,} trainable '
          f'parameters) in {args.out}')
    print(f'full checkpoint: {mb(args.checkpoint):.3f} MB, adapter-only: {mb(args.out):.3f} MB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
