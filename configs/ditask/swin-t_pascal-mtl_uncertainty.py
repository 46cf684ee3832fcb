# As swin-t_pascal-mtl_clean.py, with the task losses weighted by learnt homoscedastic uncertainty
# (Kendall et al. 2018; ditask_mm.models.losses.balancers.UncertaintyWeighting): each task loss, its
# config weight included, is multiplied by exp(-s_t) and s_t is added, with one learnt s_t per task.
_base_ = ['./swin-t_pascal-mtl_clean.py']
model = dict(loss_balancer=dict(type='UncertaintyWeighting'))
# the log-variances are parameters of the segmentor: no weight decay on them (it would pull every weight to 1)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'loss_balancer': dict(decay_mult=0.0)}))
# the runner (CheckedRunner) adds LossBalancerHook, which gives the balancer its epoch ends
