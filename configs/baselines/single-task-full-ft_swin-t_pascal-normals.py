# Single-task full fine-tuning baseline, Swin-T, PASCAL-Context: normals only.
_base_ = ['./full-ft_swin-t_pascal-mtl.py']
tasks = ['normals']
model = dict(tasks=tasks,
             decode_heads=dict(_delete_=True, normals=dict(type='MTLHRNetHead', out_channels=3)),
             loss_weights=dict(_delete_=True, normals=1.0))
train_dataloader = dict(dataset=dict(tasks=tasks))
val_dataloader = dict(dataset=dict(tasks=tasks))
test_dataloader = val_dataloader
val_evaluator = dict(tasks=tasks, baselines=dict(_delete_=True, normals=17.97))
test_evaluator = val_evaluator
