# The progressive task-specific LoRA baseline of
# progressive-lora_swin-t_pascal-mtl.py (where its settings are explained) on
# NYUD-v2: the stream layout of ../ditask/swin-t_nyud-mtl_progressive-tree.py,
# LoRA rank 16 on every qkv/proj/fc1/fc2, per group on proj/fc1/fc2 after a split.
_base_ = ['../ditask/swin-t_nyud-mtl_progressive-tree.py']
model = dict(backbone=dict(
    type='MultiTaskSwinTransformer',
    adapter=dict(_delete_=True, type='LoRALinear', rank=16, scale=4.0, dropout=0.05)))
