# Single-task DiTASK, Swin-T, PASCAL-Context: semseg only (shared and task
# transforms as in the multi-task model, with one task).
_base_ = ['../swin-t_pascal-mtl.py']
tasks = ['semseg']
model = dict(tasks=tasks,
             decode_heads=dict(_delete_=True, semseg=dict(type='MTLHRNetHead', out_channels=21)),
             loss_weights=dict(_delete_=True, semseg=1.0))
train_dataloader = dict(dataset=dict(tasks=tasks))
val_dataloader = dict(dataset=dict(tasks=tasks))
test_dataloader = val_dataloader
val_evaluator = dict(tasks=tasks, baselines=dict(_delete_=True, semseg=67.21))
test_evaluator = val_evaluator
