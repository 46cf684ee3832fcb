# Progressive task-specific DiTASK, Swin-T, PASCAL-Context MTL, 'tree' mode:
# the groups of swin-t_pascal-mtl_progressive.py, but each group's stream goes
# on into the next stage instead of feeding only the heads: stage 3's last
# block splits the shared trunk into the two group streams, stage 4 runs on
# each group stream and its last block splits them into one stream per task.
# Every block after a split holds that group's own task-specific parameters on
# proj/fc1/fc2 (qkv keeps its shared adaptation), so stage 4 runs twice before
# its last block runs four times.
_base_ = ['./swin-t_pascal-mtl_progressive.py']
model = dict(backbone=dict(branch_mode='tree'))
