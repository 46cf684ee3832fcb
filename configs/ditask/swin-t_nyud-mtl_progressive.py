# Progressive task-specific DiTASK, Swin-T, NYUD-v2 MTL (semseg, depth), 'side'
# mode, the NYUD counterpart of swin-t_pascal-mtl_progressive.py: stages 1-2
# shared, stages 3-4 one branch per task (with two tasks, stage 3's two groups
# are the two tasks), each branch the stage's last block beside the shared
# trunk; identity-initialised θ and no main-path dropout, as the clean PASCAL
# config. To test another grouping, measure the affinity first:
#   python tools/analysis_tools/task_affinity.py configs/ditask/swin-t_nyud-mtl.py --iters 200 \
#       --out work_dirs/affinity_nyud
_base_ = ['./swin-t_nyud-mtl.py']
model = dict(backbone=dict(
    adapter=dict(theta_init='zeros', main_path_dropout=0.0, task_paths_share_dropout=False),
    task_groups=['shared', 'shared', 'per_task', 'per_task'],
    branch_depth=1,
    branch_mode='side'))
