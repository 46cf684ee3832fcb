#!/usr/bin/env python
"""Run a multi-task model on one image and draw every task's prediction.

Writes, into ``--out-dir``, one PNG per task (``<stem>_<task>.png``, at the
image's original size) and a panel ``<stem>_panel.png`` (the image, then one
tile per task), and prints their paths.

The image is read as BGR and resized to ``--size H W``, else to the config's
test-pipeline size (``FixedResizeMTL`` or a ``Resize``), else kept; the model's
data preprocessor normalises it, and predictions come back at the original
size (:func:`ditask_mm.apis.inference_model`). ``CKPT`` is a full checkpoint
of the config's model, an adapter-only one
(``tools/model_converters/extract_adapters.py``), which is then loaded on top
of the pretrained weights of the config's ``init_cfg`` (an error names the
file needed when the config has none), or a merged one
(``tools/model_converters/merge_adapters.py``); see
:func:`ditask_mm.apis.init_model`.

Example::

    python tools/demo.py demo.jpg configs/ditask/swin-t_pascal-mtl.py work_dirs/x/best.pth --out-dir vis
"""
import argparse
import os.path as osp
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description='Predict every task on one image and draw the results')
    parser.add_argument('image')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help='resize the image to H×W first')
    args = parser.parse_args()

    import cv2

    from ditask_mm.apis import inference_model, init_model
    from ditask_mm.models.checkpoint_fit import CheckpointMismatchError
    from ditask_mm.models.checkpoint_file import CheckpointReadError
    from ditask_mm.models.model_checkpoint import PretrainedWeightsError
    from ditask_mm.tasks import TASKS
    from ditask_mm.visualization import render_task_map, save_panel, write_png

    image = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if image is None:
        print(f'error: cannot read image {args.image}', file=sys.stderr)
        return 1
    try:
        model = init_model(args.config, args.checkpoint, device=args.device)
    except (CheckpointMismatchError, CheckpointReadError, PretrainedWeightsError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    result = inference_model(model, image, size=tuple(args.size) if args.size else None)

    stem = osp.splitext(osp.basename(args.image))[0]
    maps, written = {}, []
    for task in model.tasks:
        head = model.decode_heads[task] if hasattr(model, 'decode_heads') else None
        maps[task] = render_task_map(task, result.get(TASKS[task].pred_key).data,
                                     num_classes=getattr(head, 'out_channels', None))
        written.append(write_png(osp.join(args.out_dir, f'{stem}_{task}.png'), maps[task]))
    panel_path = osp.join(args.out_dir, f'{stem}_panel.png')
    save_panel(panel_path, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), maps)
    written.append(panel_path)
    (ori_h, ori_w), (in_h, in_w) = result.ori_shape, result.img_shape
    print(f'resized {ori_h}x{ori_w} -> {in_h}x{in_w}' if (in_h, in_w) != (ori_h, ori_w)
          else f'kept the image size {ori_h}x{ori_w}')
    for path in written:
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
