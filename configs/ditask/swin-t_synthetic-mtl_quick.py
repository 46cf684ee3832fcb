# The embedded default (README command 1): DiTASK Swin-T on a generated
# PASCAL_MT-format dataset (tools/dataset_converters/make_synthetic_mtl.py),
# trained for a few minutes on CPU and evaluated. No pretrained weights (the
# machine has no internet): the backbone starts from random weights, so the
# public trainable policy (θ, norms, relative-position tables, PatchMerging
# reductions) and the heads do the learning. Δm is computed against the PASCAL
# single-task numbers of the base config, so here it only exercises the code.
_base_ = ['./swin-t_pascal-mtl_clean.py']
data_root = 'data/synthetic_pascal_mt'
img_size = (128, 128)
model = dict(backbone=dict(init_cfg=None, drop_path_rate=0.0))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='RandomFlipMTL', prob=0.5),
    dict(type='ScaleRotateMTL', rotation=(-10, 10), scale=(0.9, 1.1)),
    dict(type='FixedResizeMTL', size=img_size),
    dict(type='AddIgnoreRegions'),
    dict(type='PackMultiTaskInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='FixedResizeMTL', size=img_size, eval_at_resized=True),
    dict(type='AddIgnoreRegions'),
    dict(type='PackMultiTaskInputs'),
]
train_dataloader = dict(batch_size=4, num_workers=2, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=4, num_workers=2, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
                     paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0), clip_grad=dict(max_norm=5.0))
auto_scale_lr = dict(enable=False, base_batch_size=512)
max_epochs = 8
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=1, end=max_epochs,
         T_max=max_epochs - 1, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=4)
# a checkpoint every epoch (the last two kept), so that a killed run resumes
# from the epoch it was in (tools/train.py CONFIG --resume)
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=1, max_keep_ckpts=2))
randomness = dict(seed=0, deterministic=True)
