#!/usr/bin/env python
"""Fold a trained model's adapters into plain weights.

Writes, atomically, into ``--out-dir``:

* ``merged.pth``: the whole multi-task model with every adapter layer replaced
  by a ``MergedTaskLinear`` (one plain weight for the shared path and one per
  task). It computes the same outputs with no SVD, CPAB or LoRA branch. Load
  it with the same config plus
  ``--cfg-options model.backbone.adapter.type=MergedTaskLinear``
  (:func:`ditask_mm.apis.init_model` and ``tools/demo.py`` do that by
  themselves: the file's ``meta`` says it is merged).
* ``backbone_mmseg_swin.pth``: the backbone as a plain mmseg
  ``SwinTransformer`` state dict holding the shared adapted weights. It loads
  into an unmodified ``mmseg.models.backbones.SwinTransformer`` and computes
  the shared trunk exactly. When no stage branches per task (shared-only
  adaptation, e.g. single-task or LoRA models) that is every task's backbone;
  with task branches, the per-task last blocks are in ``merged.pth`` only (a
  plain Swin is one chain and cannot hold a trunk plus task branches).
  Where a stage's map fits in one window (inputs below 448² for Swin-T), our
  backbone follows the official Swin's no-shift rule and mmseg's does not:
  call ``ditask_mm.models.backbones.window_rule.apply_official_window_rule``
  on that model to compute the same features.

Example::

    python tools/model_converters/merge_adapters.py CONFIG work_dirs/x/best.pth --out-dir work_dirs/x/merged
"""
import argparse
import os
import os.path as osp
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description='Fold adapters into plain weights')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out-dir', required=True)
    args = parser.parse_args()

    from ditask_mm.apis.checkpoint_export import merged_checkpoints
    from ditask_mm.fileio import atomic_torch_save
    from ditask_mm.models.checkpoint_fit import CheckpointMismatchError
    from ditask_mm.models.checkpoint_file import CheckpointReadError
    from ditask_mm.models.model_checkpoint import PretrainedWeightsError

    try:  # a full checkpoint, or an adapter-only one on top of the config's pretrained weights
        result = merged_checkpoints(args.config, args.checkpoint)
    except (CheckpointMismatchError, CheckpointReadError, PretrainedWeightsError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)
    atomic_torch_save(result.merged, osp.join(args.out_dir, 'merged.pth'))
    atomic_torch_save(result.plain_backbone, osp.join(args.out_dir, 'backbone_mmseg_swin.pth'))
    print(f'merged {result.merged_layers} adapter layers ({result.branched_layers} with per-task weights) '
          f'into {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
