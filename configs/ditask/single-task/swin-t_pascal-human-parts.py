# Single-task DiTASK, Swin-T, PASCAL-Context: human_parts only (shared and task
# transforms as in the multi-task model, with one task).
_base_ = ['../swin-t_pascal-mtl.py']
tasks = ['human_parts']
# the same head as in the multi-task model; the single task's loss weight is 1
model = dict(loss_decode=dict(human_parts=dict(loss_weight=1.0)))
