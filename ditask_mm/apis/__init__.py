"""High-level entry points: build a model from a config and checkpoint, and predict every task on images.

Example::

    from ditask_mm.apis import inference_model, init_model

    model = init_model('configs/ditask/swin-t_pascal-mtl.py', 'work_dirs/x/best.pth', device='cuda')
    sample = inference_model(model, 'demo.jpg')
    semseg = sample.pred_sem_seg.data  # (1, H, W) class ids at the image's original size
"""
from .inference import inference_model, init_model, pipeline_image_size

__all__ = ['init_model', 'inference_model', 'pipeline_image_size']
