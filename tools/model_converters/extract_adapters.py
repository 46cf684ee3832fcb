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

``tools/test.py``, ``tools/demo.py``, ``--resume``, ``load_from`` and
:func:`ditask_mm.apis.init_model` accept the file and put it on top of the
config's pretrained weights
(:func:`ditask_mm.models.model_checkpoint.load_model_checkpoint`). The work is
:func:`ditask_mm.apis.checkpoint_export.adapter_only_checkpoint`.

Example::

    python tools/model_converters/extract_adapters.py CONFIG work_dirs/x/best.pth --out work_dirs/x/adapters.pth
"""
import argparse
import os
import sys


def mb(path: str) -> float:
    """Size of ``path`` in MiB."""
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

    from ditask_mm.apis.checkpoint_export import CheckpointExportError, adapter_only_checkpoint
    from ditask_mm.fileio import atomic_torch_save
    from ditask_mm.models.checkpoint_fit import CheckpointMismatchError
    from ditask_mm.models.checkpoint_file import CheckpointReadError

    try:
        checkpoint, source_tensors = adapter_only_checkpoint(args.config, args.checkpoint,
                                                             with_training_state=args.with_training_state)
    except (CheckpointMismatchError, CheckpointReadError, CheckpointExportError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    meta = checkpoint['meta']
    atomic_torch_save(checkpoint, args.out)
    print(f'kept {meta["keys"]} of {source_tensors} tensors ({meta["numel"]:,} values; '
          f'{meta["trainable_params"]:,} trainable parameters) in {args.out}')
    print(f'full checkpoint: {mb(args.checkpoint):.3f} MB, adapter-only: {mb(args.out):.3f} MB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
