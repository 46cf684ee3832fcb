# Single-task full fine-tuning baseline, Swin-T, PASCAL-Context: human_parts only.
_base_ = ['../ditask/single-task/swin-t_pascal-human-parts.py']
model = dict(backbone=dict(type='MultiTaskSwinTransformer', adapter=None, trainable='all'))
