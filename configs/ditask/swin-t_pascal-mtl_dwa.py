# As swin-t_pascal-mtl_clean.py, with the task losses weighted by dynamic weight average (Liu et al. 2019;
# ditask_mm.models.losses.balancers.DWA): each epoch, w_t = T * softmax(r_t / 2) with r_t the ratio of
# task t's average losses over the last two epochs (weights 1 for the first two epochs). Each step's
# task losses are averaged over the ranks before they are accumulated, so every rank holds the same
# averages; LossBalancerHook turns them into the next epoch's weights at every epoch end.
_base_ = ['./swin-t_pascal-mtl_clean.py']
model = dict(loss_balancer=dict(type='DWA', temperature=2.0))
# the runner (CheckedRunner) adds LossBalancerHook, which gives the balancer its epoch ends
