# Main job, step 1: a stand-in for ImageNet pretraining. A plain Swin-T (no
# adapters, every backbone parameter trains: the full fine-tuning baseline's
# backbone) learns the generated PASCAL_MT data for a few epochs from random
# weights; tools/model_converters/export_official_swin.py then writes its
# backbone as an official Swin checkpoint ({'model': sd}, official names), which
# the two fine-tuning configs of this folder load through init_cfg Pretrained,
# as they would load swin_tiny_patch4_window7_224_22k.pth.
_base_ = ['../ditask/swin-t_synthetic-mtl_quick.py']
model = dict(backbone=dict(type='MultiTaskSwinTransformer', adapter=None, trainable='all'))
max_epochs = 6
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=1, end=max_epochs,
         T_max=max_epochs - 1, convert_to_iter_based=True),
]
# one validation and one checkpoint, at the end (the full model with its optimizer state is ~0.3 GB)
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs, max_keep_ckpts=1, save_best=None))
