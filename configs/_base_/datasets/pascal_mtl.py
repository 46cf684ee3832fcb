# PASCAL-Context MTL (the PASCAL_MT archive), the public DiTASK/MTLoRA protocol
# (docs/datasets.md; differences in docs/fidelity.md): flip + rotate ±20° + scale
# 0.75–1.25, anisotropic resize to 448², scored against targets resized to 448².
dataset_type = 'PascalContextMTLDataset'
data_root = 'data/PASCAL_MT'
# The run's tasks, declared once: model, datasets and evaluator get them at build time
# (ditask_mm.engine.resolve_tasks); --cfg-options "tasks=['semseg','sal']" changes all of them.
tasks = ['semseg', 'human_parts', 'sal', 'normals']
img_size = (448, 448)
# The image as the public code sees it: the stored pixels (its PIL reader ignores
# EXIF rotation, and the labels follow the stored pixels), float64 through
# flip/rotate/resize, and one astype(np.uint8) at the end, whose truncation
# wraps cubic overshoot around (−1.5 → 255, 256.2 → 0): image_cast='truncate_wrap'.
# image_cast='round_clip' (the clean config) rounds and clips instead.
train_pipeline = [
    dict(type='LoadImageFromFile', color_type='color_ignore_orientation'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='ImageToFloat64'),
    dict(type='RandomFlipMTL', prob=0.5),
    dict(type='ScaleRotateMTL', rotation=(-20, 20), scale=(0.75, 1.25)),
    dict(type='FixedResizeMTL', size=img_size, image_cast='truncate_wrap'),
    dict(type='AddIgnoreRegions'),
    dict(type='PackMultiTaskInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', color_type='color_ignore_orientation'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='FixedResizeMTL', size=img_size, eval_at_resized=True, image_cast='truncate_wrap'),
    dict(type='AddIgnoreRegions'),
    dict(type='PackMultiTaskInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline,
                 test_mode=True))
test_dataloader = val_dataloader
# single-task Swin-T baselines of MTLoRA/DiTASK (448², D:main.py:531) for Δm, the only copy:
# the metric uses those of the run's tasks. Edge (odsF, used by the 5-task configs only): MTLoRA and
# DiTASK never report PASCAL edges, so its baseline is another paper's single-task network: 72.7, the
# "Single Task" row of the ASTMT results table (Maninis et al., Attentive Single-Tasking of Multiple
# Tasks, CVPR 2019; README of facebookresearch/astmt), a ResNet-101 DeepLab-v3+ per task, odsF from
# SEISM on the 5,105 val images. A different backbone from the Swin-T rows: its Δm term is comparable
# across runs here, not with a Swin-T single-task edge model. Edges are matched at maxDist 0.0075.
val_evaluator = dict(type='MultiTaskMetric',
                     baselines=dict(semseg=67.21, human_parts=61.93, sal=62.35, normals=17.97, edge=72.7),
                     edge_max_dist=0.0075)
test_evaluator = val_evaluator
