# Decoder-only baseline, Swin-T, PASCAL-Context MTL: the backbone is frozen,
# only the four heads train (1,946,624 parameters).
_base_ = ['./full-ft_swin-t_pascal-mtl.py']
model = dict(backbone=dict(trainable='frozen'))
