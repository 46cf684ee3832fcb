# Full fine-tuning baseline, Swin-T, PASCAL-Context MTL: plain linears, every
# backbone parameter trains (27,517,818), one shared stream for all tasks.
_base_ = ['../ditask/swin-t_pascal-mtl.py']
model = dict(backbone=dict(type='MultiTaskSwinTransformer', adapter=None, trainable='all'))
