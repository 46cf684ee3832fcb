# The multi-task segmentor around any backbone: one HRNet-style head per task
# and the paper's losses and task weights. Model bases add the backbone
# (ditask_swin-t.py; configs/ditask/vit-b_pascal-mtl.py and
# dinov2-s_pascal-mtl.py put an AdaptedBackbone and a neck here).
# The tasks are declared once, as the top-level `tasks` of the dataset base
# (configs/_base_/datasets/*.py); one head is built per task from
# `decode_head`, with `num_classes` for the label tasks (the other tasks'
# channels are fixed: sal/edge/depth 1, normals 3) and the task's
# `loss_decode` entry, whose loss_weight is the task weight (applied once).
model = dict(
    type='MultiTaskSegmentor',
    data_preprocessor=dict(type='MultiTaskDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, size_divisor=32),
    # in_channels come from the backbone when it states them; decode_heads=dict(<task>=dict(...)) overrides one head
    decode_head=dict(type='MTLHRNetHead'),
    num_classes=dict(semseg=21, human_parts=7),
    # The paper's task weights (the only place they are written). Each entry is
    # merged over its task's loss (TASK_LOSSES, ditask_mm/models/segmentors/
    # multitask_segmentor.py: cross-entropy, balanced BCE, L1); an entry with a
    # `type` replaces it.
    loss_decode=dict(
        semseg=dict(loss_weight=1.0),
        human_parts=dict(loss_weight=2.0),
        sal=dict(loss_weight=5.0),
        normals=dict(loss_weight=10.0),
        depth=dict(loss_weight=1.0),
        edge=dict(loss_weight=50.0)))
