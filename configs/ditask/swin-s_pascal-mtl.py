# DiTASK, Swin-S (ImageNet-22k), PASCAL-Context MTL. Tessellation 128 shared
# and 64 per task, as the public small config.
_base_ = ['./swin-t_pascal-mtl.py']
model = dict(backbone=dict(
    arch='small',
    adapter=dict(tessellation_size=128, task_tessellation_size=64),
    init_cfg=dict(checkpoint='https://github.com/SwinTransformer/storage/releases/download/v1.0.8/'
                  'swin_small_patch4_window7_224_22k.pth')))
