# MTLoRA baseline, Swin-T: shared LoRA rank 64 on every qkv/proj/fc1/fc2,
# per-task rank 4 on proj/fc1/fc2 of the last block of each stage, scales 4,
# dropout 0.05 (public MTLoRA tiny config). Unlike the public code, the
# shared LoRA of the last block of the last stage, whose output nothing
# reads, is not built (589,824 parameters fewer: 5,808,186 vs 6,398,010).
_base_ = ['../ditask/swin-t_pascal-mtl.py']
model = dict(backbone=dict(
    type='MTLoRASwinTransformer',
    adapter=dict(_delete_=True, type='MTLoRALinear', rank=64, task_rank=4, shared_scale=4.0,
                 task_scale=4.0, dropout=0.05)))
