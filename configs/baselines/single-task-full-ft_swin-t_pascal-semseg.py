# Single-task full fine-tuning baseline, Swin-T, PASCAL-Context: semseg only.
_base_ = ['../ditask/single-task/swin-t_pascal-semseg.py']
model = dict(backbone=dict(type='MultiTaskSwinTransformer', adapter=None, trainable='all'))
