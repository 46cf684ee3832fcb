# DiTASK Swin-T with the public code's architecture (shared/docs/method.md §1):
# a shared DiTASK transform (tessellation 64) on qkv (split in q/k/v), proj,
# fc1 and fc2 of every block, and per-task transforms (tessellation 4) on
# proj/fc1/fc2 of the last block of each stage; task streams merged by
# PatchMerging; trainable as in the public code.
# The decode heads and the multi-task segmentor wrap this backbone when they land.
tasks = ['semseg', 'human_parts', 'sal', 'normals']
swin_t_in22k = ('https://github.com/SwinTransformer/storage/releases/download/v1.0.8/'
                'swin_tiny_patch4_window7_224_22k.pth')
model = dict(
    type='DiTASKSwinTransformer',
    tasks=tasks,
    arch='tiny',
    pretrain_img_size=224,
    window_size=7,
    drop_path_rate=0.2,
    adapter=dict(type='DiTASKLinear', tessellation_size=64, task_tessellation_size=4,
                 theta_init='zeros', main_path_dropout=0.0, spectrum_mode='resample'),
    adapted_layers=('qkv', 'proj', 'fc1', 'fc2'),
    task_layers=('proj', 'fc1', 'fc2'),
    out_type='post_merge',
    trainable='public',
    init_cfg=dict(type='Pretrained', checkpoint=swin_t_in22k))
