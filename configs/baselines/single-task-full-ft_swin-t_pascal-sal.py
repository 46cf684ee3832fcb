# Single-task full fine-tuning baseline, Swin-T, PASCAL-Context: sal only.
_base_ = ['../ditask/single-task/swin-t_pascal-sal.py']
model = dict(backbone=dict(type='MultiTaskSwinTransformer', adapter=None, trainable='all'))
