# DiTASK, Swin-T (ImageNet-22k), PASCAL-Context MTL: semseg, human parts,
# saliency, normals. The paper's setup, including the public code's
# training-relevant quirks: kaiming-initialised θ and dropout 0.05 on the
# frozen main path (see swin-t_pascal-mtl_clean.py for neither). 8 GPUs × 8
# images; the LR is scaled from 5e-4 at batch 512 (auto_scale_lr).
_base_ = ['../_base_/models/ditask_swin-t.py', '../_base_/datasets/pascal_mtl.py',
          '../_base_/schedules/schedule_300e.py', '../_base_/default_runtime.py']
# the task proj of each stage's last block reads the shared proj's dropped input, same mask (public code)
model = dict(backbone=dict(adapter=dict(theta_init='kaiming', main_path_dropout=0.05, task_paths_share_dropout=True)))
