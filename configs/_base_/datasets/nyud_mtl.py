# NYUD-v2 MTL (the NYUD_MT archive), the public protocol: rotation 0, zoom
# in by 1.0/1.2/1.5 (depth divided by the zoom), flip, resize to 448²; scored
# at 448². DiTASK's NYUD table (paper Table 4) reports semseg and depth.
dataset_type = 'NYUDMTLDataset'
data_root = 'data/NYUD_MT'
# The run's tasks, declared once: model, datasets and evaluator get them at build time
# (ditask_mm.engine.resolve_tasks).
tasks = ['semseg', 'depth']
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
    dict(type='ScaleRotateMTL', rotation=(0.0, 0.0, 0.0), scale=(1.0, 1.2, 1.5)),
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
    batch_size=8, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline,
                 test_mode=True))
test_dataloader = val_dataloader
# single-task Swin-T numbers of the DiTASK paper's NYUD table (Table 4), for Δm; the only copy.
# Normals and edge have none: the DiTASK paper reports semseg and depth only, and no published
# single-task NYUD edge odsF (or normals error) could be found to cite, so a run with those tasks
# leaves them out of Δm (logged). NYUD edges are matched at maxDist 0.011 (the ATRC/InvPT protocol).
val_evaluator = dict(type='MultiTaskMetric', baselines=dict(semseg=33.18, depth=0.667), edge_max_dist=0.011)
test_evaluator = val_evaluator
