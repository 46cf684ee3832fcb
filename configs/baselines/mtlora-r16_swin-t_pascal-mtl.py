# MTLoRA baseline with shared rank 16 (tasks rank 4), Swin-T, PASCAL-Context MTL.
_base_ = ['./mtlora-r64_swin-t_pascal-mtl.py']
model = dict(backbone=dict(adapter=dict(rank=16)))
