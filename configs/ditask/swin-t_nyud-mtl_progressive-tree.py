# As swin-t_nyud-mtl_progressive.py in 'tree' mode: stage 3's last block splits
# the trunk into a semseg and a depth stream, and stage 4 runs on each.
_base_ = ['./swin-t_nyud-mtl_progressive.py']
model = dict(backbone=dict(branch_mode='tree'))
