# Single-task full fine-tuning baseline, Swin-T, PASCAL-Context: normals only.
_base_ = ['../ditask/single-task/swin-t_pascal-normals.py']
model = dict(backbone=dict(type='MultiTaskSwinTransformer', adapter=None, trainable='all'))
