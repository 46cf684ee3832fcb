#!/usr/bin/env python
"""Write a trained plain Swin backbone as an official Swin checkpoint.

Builds the config's model (no pretrained weights are read), loads the
checkpoint into it (it must fit exactly) and writes, atomically, the backbone
as ``{'model': sd}`` with the official names, PatchMerging channel order and
index/mask buffers (:func:`ditask_mm.models.backbones.swin_export.export_official_swin`).
The file loads like a downloaded ``swin_tiny_patch4_window7_224_22k.pth``:
``init_cfg=dict(type='Pretrained', checkpoint=FILE)``.

Example::

    python tools/model_converters/export_official_swin.py \\
        configs/main_job/standin-pretrain_swin-t_synthetic.py work_dirs/main/standin/epoch_6.pth \\
        --out work_dirs/main/standin/swin_official.pth
"""
import argparse
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description='Export a plain (adapter-free) Swin backbone in the official '
                                     'Swin checkpoint format')
    parser.add_argument('config', help='config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='full checkpoint of the config\'s model')
    parser.add_argument('--out', required=True, help='output file (.pth)')
    parser.add_argument('--img-size', type=int, default=None,
                        help='pretraining image side for the attn_mask buffers (default: the config\'s '
                             'model.backbone.pretrain_img_size, else 224)')
    args = parser.parse_args()

    from ditask_mm.apis import init_model
    from ditask_mm.fileio import atomic_torch_save
    from ditask_mm.models.backbones.swin_export import SwinExportError, export_official_swin
    from ditask_mm.models.checkpoint_file import CheckpointReadError
    from ditask_mm.models.checkpoint_fit import CheckpointMismatchError

    if not os.path.isfile(args.checkpoint):
        print(f'error: checkpoint {args.checkpoint} does not exist', file=sys.stderr)
        return 1
    try:
        model = init_model(args.config, checkpoint=args.checkpoint, init_weights=False)
        backbone = model.backbone
        img_size = args.img_size or model.cfg.model.backbone.get('pretrain_img_size', 224)
        patch_size = backbone.patch_embed.projection.kernel_size[0]
        exported = export_official_swin(backbone, img_size=img_size, patch_size=patch_size)
    except (SwinExportError, CheckpointMismatchError, CheckpointReadError) as err:
        print(f'error: {args.checkpoint}: {err}', file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_torch_save(exported, args.out)
    tensors = exported['model']
    print(f'wrote {len(tensors)} tensors ({sum(v.numel() for v in tensors.values()):,} values) in the official '
          f'Swin layout (attn_mask for {img_size}² inputs) to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
