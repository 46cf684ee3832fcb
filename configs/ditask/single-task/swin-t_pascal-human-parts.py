# Single-task DiTASK, Swin-T, PASCAL-Context: human_parts only (shared and task
# transforms as in the multi-task model, with one task).
_base_ = ['../swin-t_pascal-mtl.py']
tasks = ['human_parts']
model = dict(tasks=tasks,
             decode_heads=dict(_delete_=True, human_parts=dict(type='MTLHRNetHead', out_channels=7)),
             loss_weights=dict(_delete_=True, human_parts=1.0))
train_dataloader = dict(dataset=dict(tasks=tasks))
val_dataloader = dict(dataset=dict(tasks=tasks))
test_dataloader = val_dataloader
val_evaluator = dict(tasks=tasks, baselines=dict(_delete_=True, human_parts=61.93))
test_evaluator = val_evaluator
