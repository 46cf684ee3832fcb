# Runtime defaults shared by every ditask_mm config.
# `ditask_mm` is imported while the config is parsed: it applies the compat
# patches before anything imports mmseg.models and registers our modules.
custom_imports = dict(imports=['ditask_mm', 'ditask_mm.models', 'ditask_mm.datasets', 'ditask_mm.evaluation',
                               'ditask_mm.engine'], allow_failed_imports=False)
default_scope = 'ditask_mm'
runner_type = 'CheckedRunner'  # checks every checkpoint it loads; adapter-only ones go on the pretrained weights
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
# Where the logged scalars go: LocalVisBackend writes <work_dir>/<timestamp>/vis_data/scalars.json. For
# TensorBoard too (needs the tensorboard package; docs/install.md), use this line here or in any config:
# vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
# or, for one run: --cfg-options vis_backends=local,tensorboard. tools/train.py copies the top-level
# vis_backends into visualizer.vis_backends (ditask_mm.engine.config_loading.sync_vis_backends).
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=True, window_size=10)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # written to a temporary file and renamed: never truncated; old ones removed only after the new one is safe
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=True, interval=5, max_keep_ckpts=2,
                    save_best='delta_m', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
# stop on a NaN/inf loss before any checkpoint of broken weights is written;
# reseed every epoch so that --resume continues exactly as an uninterrupted run;
# under DDP, give every rank rank 0's BatchNorm statistics before validation, so
# that the model validated is the model saved
custom_hooks = [dict(type='NaNLossGuardHook'), dict(type='EpochReseedHook'), dict(type='BroadcastBuffersHook')]
