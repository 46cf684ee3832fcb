# As swin-t_pascal-mtl.py, with identity-initialised θ, no main-path dropout (so
# no dropped input shared with the task paths either),
# and the image cast to uint8 by rounding and clipping (image_cast='round_clip')
# instead of the public code's wrapping truncation: the same pipelines otherwise.
_base_ = ['./swin-t_pascal-mtl.py']
model = dict(backbone=dict(adapter=dict(theta_init='zeros', main_path_dropout=0.0, task_paths_share_dropout=False)))
img_size = (448, 448)
train_pipeline = [
    dict(type='LoadImageFromFile', color_type='color_ignore_orientation'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='ImageToFloat64'),
    dict(type='RandomFlipMTL', prob=0.5),
    dict(type='ScaleRotateMTL', rotation=(-20, 20), scale=(0.75, 1.25)),
    dict(type='FixedResizeMTL', size=img_size, image_cast='round_clip'),
    dict(type='AddIgnoreRegions'),
    dict(type='PackMultiTaskInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', color_type='color_ignore_orientation'),
    dict(type='LoadMultiTaskAnnotations'),
    dict(type='FixedResizeMTL', size=img_size, eval_at_resized=True, image_cast='round_clip'),
    dict(type='AddIgnoreRegions'),
    dict(type='PackMultiTaskInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
