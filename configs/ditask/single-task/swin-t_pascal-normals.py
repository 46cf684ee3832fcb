# Single-task DiTASK, Swin-T, PASCAL-Context: normals only (shared and task
# transforms as in the multi-task model, with one task).
_base_ = ['../swin-t_pascal-mtl.py']
tasks = ['normals']
# the same head as in the multi-task model; the single task's loss weight is 1
model = dict(loss_decode=dict(normals=dict(loss_weight=1.0)))
