# DiTASK, Swin-T (ImageNet-22k), NYUD-v2 MTL: semseg (40 classes) and depth,
# weights 1 and 1. The paper trains NYUD for 100 epochs.
_base_ = ['../_base_/models/ditask_swin-t.py', '../_base_/datasets/nyud_mtl.py',
          '../_base_/schedules/schedule_300e.py', '../_base_/default_runtime.py']
# tasks (semseg, depth), losses (weights 1 and 1) and baselines come from the bases
model = dict(
    num_classes=dict(semseg=40),
    # as swin-t_pascal-mtl.py: the task proj shares the shared proj's dropped input (public code)
    backbone=dict(adapter=dict(theta_init='kaiming', main_path_dropout=0.05, task_paths_share_dropout=True)))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=20, end=100, T_max=80,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=100)
