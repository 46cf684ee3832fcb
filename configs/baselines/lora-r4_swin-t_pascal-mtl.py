# LoRA baseline, Swin-T, PASCAL-Context MTL: one shared rank-4 LoRA on every
# qkv/proj/fc1/fc2 (282,624 parameters, the public code's "lora_only"
# approximation of the paper's LoRA row), no task-specific adaptation; the
# other backbone parts train as in the public code.
_base_ = ['../ditask/swin-t_pascal-mtl.py']
model = dict(backbone=dict(
    type='MultiTaskSwinTransformer',
    adapter=dict(_delete_=True, type='LoRALinear', rank=4, scale=4.0, dropout=0.05),
    task_layers=()))
