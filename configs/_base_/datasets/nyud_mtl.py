# NYUD-v2 MTL (the NYUD_MT archive), the public protocol: rotation 0, zoom
# in by 1.0/1.2/1.5 (depth divided by the zoom), flip, resize to 448²; scored
# at 448². DiTASK's NYUD table (paper Table 4) reports semseg and depth.
dataset_type = 'NYUDMTLDataset'
data_root = 'data/NYUD_MT'
data_tasks = ['semseg', 'depth']  # the model names the same tasks
img_size = (448, 448)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='RandomFlipMTL', prob=0.5),
    dict(type='ScaleRotateMTL', rotation=(0.0, 0.0, 0.0), scale=(1.0, 1.2, 1.5)),
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
train_dataloader = dict(
    batch_size=8, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', tasks=data_tasks, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', tasks=data_tasks, pipeline=test_pipeline,
                 test_mode=True))
test_dataloader = val_dataloader
# single-task Swin-T numbers of the DiTASK paper's NYUD table (Table 4)
val_evaluator = dict(type='MultiTaskMetric', tasks=data_tasks, baselines=dict(semseg=33.18, depth=0.667))
test_evaluator = val_evaluator
