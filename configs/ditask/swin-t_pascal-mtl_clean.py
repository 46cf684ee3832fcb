# As swin-t_pascal-mtl.py, with identity-initialised θ and no main-path dropout.
_base_ = ['./swin-t_pascal-mtl.py']
model = dict(backbone=dict(adapter=dict(theta_init='zeros', main_path_dropout=0.0)))
