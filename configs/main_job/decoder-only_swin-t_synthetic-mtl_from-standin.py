# Main job, step 2b: the decoder-only baseline on the same pretrained backbone
# as ditask_swin-t_synthetic-mtl_from-standin.py: plain Swin-T, frozen (as in
# configs/baselines/decoder-only_swin-t_pascal-mtl.py), only the four heads
# train, with the quick config's data, schedule and optimizer.
_base_ = ['./ditask_swin-t_synthetic-mtl_from-standin.py']
model = dict(backbone=dict(type='MultiTaskSwinTransformer', adapter=None, trainable='frozen'))
