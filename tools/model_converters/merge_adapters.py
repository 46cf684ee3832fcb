#!/usr/bin/env python
"""Fold a trained model's adapters into plain weights.

Writes, atomically, into ``--out-dir``:

* ``merged.pth``: the whole multi-task model with every adapter layer replaced
  by a ``MergedTaskLinear`` (one plain weight for the shared path and one per
  task). It computes the same outputs with no SVD, CPAB or LoRA branch. Load
  it with the same config plus
  ``--cfg-options model.backbone.adapter.type=MergedTaskLinear``.
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

    import ditask_mm  # noqa: F401  (compat patches first)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import ditask_mm.models  # noqa: F401
    from ditask_mm.adapters import MergedTaskLinear, adapter_layers, merge_adapters
    from ditask_mm.fileio import atomic_torch_save
    from ditask_mm.models.adapter_checkpoint import CheckpointMismatchError
    from ditask_mm.models.checkpoint_file import CheckpointReadError
    from ditask_mm.models.model_checkpoint import PretrainedWeightsError, load_model_checkpoint
    from ditask_mm.registry import MODELS

    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'ditask_mm'))
    model = MODELS.build(cfg.model)
    try:  # a full checkpoint, or an adapter-only one on top of the config's pretrained weights
        load_model_checkpoint(model, args.checkpoint)
    except (CheckpointMismatchError, CheckpointReadError, PretrainedWeightsError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    backbone = getattr(model, 'backbone', model)
    merged = merge_adapters(model)
    os.makedirs(args.out_dir, exist_ok=True)
    meta = dict(config=cfg.pretty_text, source_checkpoint=osp.abspath(args.checkpoint),
                merged_layers=len(merged), note='load with model.backbone.adapter.type=MergedTaskLinear')
    atomic_torch_save(dict(meta=meta, state_dict=model.state_dict()), osp.join(args.out_dir, 'merged.pth'))
    plain = {k: v for k, v in backbone.state_dict().items() if '.task_weights.' not in k}
    atomic_torch_save(dict(meta=dict(meta, note='plain mmseg SwinTransformer state dict: shared adapted weights'),
                     state_dict=plain), osp.join(args.out_dir, 'backbone_mmseg_swin.pth'))
    branched = sum(1 for _, layer in adapter_layers(backbone) if isinstance(layer, MergedTaskLinear) and layer.tasks)
    print(f'merged {len(merged)} adapter layers ({branched} with per-task weights) into {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
