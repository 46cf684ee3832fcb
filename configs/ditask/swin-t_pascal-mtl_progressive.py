# Progressive task-specific DiTASK, Swin-T, PASCAL-Context MTL, 'side' mode: the
# clean DiTASK config (swin-t_pascal-mtl_clean.py) with task groups per stage
# instead of one branch per task everywhere (README "Task groups"):
#   stages 1-2: shared, no branch (the two costliest stages run once);
#   stage 3: two groups, one branch each, shared by the group's tasks:
#            semseg + human_parts + sal, and normals;
#   stage 4: one task per group (per-task capacity kept next to the heads).
# Each branch is the stage's last block (branch_depth=1) beside the shared
# trunk, which alone feeds the next stage (DiTASK's layout).
# The stage-3 groups are the affinity tool's proposal on the generated
# PASCAL_MT data (24 batches from the main job's stand-in pretrained Swin-T:
# normals' gradients oppose the other three tasks' there; docs/benchmarks.md
# "Task affinity"). They are not a finding about PASCAL. To recompute them on
# real PASCAL, from the start of training or from a checkpoint:
#   python tools/analysis_tools/task_affinity.py configs/ditask/swin-t_pascal-mtl_clean.py \
#       --iters 200 --num-groups 1 1 2 4 --out work_dirs/affinity \
#       --write-config configs/ditask/my_progressive.py
_base_ = ['./swin-t_pascal-mtl_clean.py']
model = dict(backbone=dict(
    task_groups=['shared', 'shared', [['semseg', 'human_parts', 'sal'], ['normals']], 'per_task'],
    branch_depth=1,
    branch_mode='side'))
