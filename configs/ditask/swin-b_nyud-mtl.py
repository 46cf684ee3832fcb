# DiTASK, Swin-B (ImageNet-22k), NYUD-v2 MTL; tessellation 128 shared, 64 per task.
_base_ = ['./swin-t_nyud-mtl.py']
model = dict(backbone=dict(
    arch='base',
    adapter=dict(tessellation_size=128, task_tessellation_size=64),
    init_cfg=dict(checkpoint='https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
                  'swin_base_patch4_window7_224_22k.pth')))
