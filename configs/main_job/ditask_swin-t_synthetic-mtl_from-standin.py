# Main job, step 2a: DiTASK Swin-T fine-tuned on the generated PASCAL_MT data
# from the stand-in pretrained backbone, loaded as a user's official Swin
# weights are: init_cfg Pretrained on an official-format file
# (configs/main_job/standin-pretrain_swin-t_synthetic.py, then
# tools/model_converters/export_official_swin.py). Everything else is the quick
# config's: 8 epochs at 128², the public trainable policy (θ, norms,
# relative-position tables, PatchMerging reductions) and the heads.
_base_ = ['../ditask/swin-t_synthetic-mtl_quick.py']
standin_checkpoint = 'work_dirs/main/standin/swin_official.pth'
model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=standin_checkpoint)))
