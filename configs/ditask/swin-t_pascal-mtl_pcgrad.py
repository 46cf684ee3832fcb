# As swin-t_pascal-mtl_clean.py, with the task gradients combined by PCGrad (Yu et al. 2020;
# ditask_mm.models.losses.balancers.PCGrad, torchjd's aggregator): each step back-propagates every task
# loss (its config weight included) separately over the parameters that several tasks share, projects
# each task gradient off the others it conflicts with, and sums them; the heads and the task-specific
# adapters get their own task's gradient. PCGrad sums, so without conflicts the update is the
# fixed-weights one and the learning rate carries over. Other gradient-level methods:
#   --cfg-options model.loss_balancer.type=MGDA (or CAGrad, AlignedMTL, UPGrad; these average the task
#   gradients: add model.loss_balancer.scale=4 to keep the summed step size with 4 tasks)
# Cost: one backward pass per task (docs/benchmarks.md, "Loss balancing"). Under DDP the runner wraps the
# model in GradientBalancingDDP, which all-reduces the per-task gradients before combining them.
_base_ = ['./swin-t_pascal-mtl_clean.py']
model = dict(loss_balancer=dict(type='PCGrad'))
