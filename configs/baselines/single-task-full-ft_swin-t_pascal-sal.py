# Single-task full fine-tuning baseline, Swin-T, PASCAL-Context: sal only.
_base_ = ['./full-ft_swin-t_pascal-mtl.py']
tasks = ['sal']
model = dict(tasks=tasks,
             decode_heads=dict(_delete_=True, sal=dict(type='MTLHRNetHead', out_channels=1)),
             loss_weights=dict(_delete_=True, sal=1.0))
train_dataloader = dict(dataset=dict(tasks=tasks))
val_dataloader = dict(dataset=dict(tasks=tasks))
test_dataloader = val_dataloader
val_evaluator = dict(tasks=tasks, baselines=dict(_delete_=True, sal=62.35))
test_evaluator = val_evaluator
