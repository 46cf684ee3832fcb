#!/usr/bin/env python
"""Run a multi-task model on one image and draw every task's prediction.

Writes, into ``--out-dir``, one PNG per task (``<stem>_<task>.png``, at the
image's original size) and a panel ``<stem>_panel.png`` (the image, then one
tile per task), and prints their paths.

The image is read as BGR and resized to ``--size H W``, else to the config's
test-pipeline size (``FixedResizeMTL`` or a ``Resize``), else kept; the model's
data preprocessor normalises it, and predictions come back at the original
size. ``CKPT`` is a full checkpoint of the config's model, or an adapter-only
one (``tools/model_converters/extract_adapters.py``), which is then loaded on
top of the pretrained weights of the config's ``init_cfg`` (an error names the
file needed when the config has none).

Example::

    python tools/demo.py demo.jpg configs/ditask/swin-t_pascal-mtl.py work_dirs/x/best.pth --out-dir vis
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Tuple


def pipeline_size(cfg, image_hw: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """The ``(height, width)`` the config's test pipeline resizes an ``image_hw`` image to, if it says."""
    pipelines = [cfg.get('test_pipeline')]
    for loader in ('test_dataloader', 'val_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset') or {}
        pipelines.append(dataset.get('pipeline'))
    for pipeline in filter(None, pipelines):
        for step in pipeline:
            kind = str(step.get('type', ''))
            if kind.endswith('FixedResizeMTL') and step.get('size') is not None:
                size = step['size']
                return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
            if kind.split('.')[-1] == 'Resize' and step.get('scale') is not None:
                scale = step['scale']  # mmcv: (w, h), or (long, short) with keep_ratio
                scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
                if not step.get('keep_ratio', False):
                    return int(scale[1]), int(scale[0])
                height, width = image_hw
                ratio = min(max(scale) / max(height, width), min(scale) / min(height, width))
                return int(height * ratio + 0.5), int(width * ratio + 0.5)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description='Predict every task on one image and draw the results')
    parser.add_argument('image')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help='resize the image to H×W first')
    args = parser.parse_args()

    import ditask_mm  # noqa: F401  (compat patches first)
    import cv2
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.structures import SegDataSample

    import ditask_mm.models  # noqa: F401
    from ditask_mm.models.adapter_checkpoint import CheckpointMismatchError
    from ditask_mm.models.checkpoint_file import CheckpointReadError
    from ditask_mm.models.model_checkpoint import PretrainedWeightsError, load_model_checkpoint
    from ditask_mm.registry import MODELS
    from ditask_mm.tasks import TASKS
    from ditask_mm.visualization import render_task_map, save_panel, write_png

    image = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if image is None:
        print(f'error: cannot read image {args.image}', file=sys.stderr)
        return 1
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'ditask_mm'))
    model = MODELS.build(cfg.model)
    try:
        load_model_checkpoint(model, args.checkpoint)
    except (CheckpointMismatchError, CheckpointReadError, PretrainedWeightsError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    model.to(args.device).eval()

    ori_hw = image.shape[:2]
    size = tuple(args.size) if args.size else pipeline_size(cfg, ori_hw)
    if size is not None and tuple(size) != ori_hw:
        image_in = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    else:
        image_in = image
    inputs = torch.from_numpy(image_in).permute(2, 0, 1).contiguous()
    sample = SegDataSample(metainfo=dict(ori_shape=ori_hw, img_shape=image_in.shape[:2], img_path=args.image))
    with torch.no_grad():
        result = model.test_step(dict(inputs=[inputs], data_samples=[sample]))[0]

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
    print(f'resized {ori_hw[0]}x{ori_hw[1]} -> {image_in.shape[0]}x{image_in.shape[1]}' if image_in is not image
          else f'kept the image size {ori_hw[0]}x{ori_hw[1]}')
    for path in written:
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
