# Runtime defaults shared by every ditask_mm config.
# `ditask_mm` is imported while the config is parsed: it applies the compat
# patches before anything imports mmseg.models and registers our modules.
custom_imports = dict(imports=['ditask_mm', 'ditask_mm.models'], allow_failed_imports=False)
default_scope = 'ditask_mm'
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_level = 'INFO'
load_from = None
resume = False
