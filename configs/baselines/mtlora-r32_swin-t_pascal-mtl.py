# MTLoRA baseline with shared rank 32 (tasks rank 4), Swin-T, PASCAL-Context MTL.
_base_ = ['./mtlora-r64_swin-t_pascal-mtl.py']
model = dict(backbone=dict(adapter=dict(rank=32)))
