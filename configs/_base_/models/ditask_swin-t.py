# DiTASK Swin-T multi-task segmentor with the public code's architecture
# (docs/fidelity.md lists where it differs): a shared DiTASK transform (tessellation
# 64) on qkv (split in q/k/v), proj, fc1 and fc2 of every block; per-task
# transforms (tessellation 4) on proj/fc1/fc2 of the last block of each stage;
# task streams merged by PatchMerging; trainable as in the public code; one
# HRNet-style head per task (in_channels 2C, 4C, 8C, 8C from the backbone);
# the paper's losses and weights (mtl_segmentor.py).
_base_ = ['./mtl_segmentor.py']  # the heads, losses and task weights
swin_t_in22k = ('https://github.com/SwinTransformer/storage/releases/download/v1.0.8/'
                'swin_tiny_patch4_window7_224_22k.pth')
model = dict(
    backbone=dict(
        type='DiTASKSwinTransformer',
        arch='tiny',
        pretrain_img_size=224,
        window_size=7,
        drop_path_rate=0.2,
        adapter=dict(type='DiTASKLinear', tessellation_size=64, task_tessellation_size=4,
                     theta_init='zeros', main_path_dropout=0.0, task_paths_share_dropout=False,
                     spectrum_mode='resample'),
        adapted_layers=('qkv', 'proj', 'fc1', 'fc2'),
        task_layers=('proj', 'fc1', 'fc2'),
        out_type='post_merge',
        trainable='public',
        with_cp_branches=False,  # True: recompute the task branches in the backward (less memory, slower)
        init_cfg=dict(type='Pretrained', checkpoint=swin_t_in22k)))
