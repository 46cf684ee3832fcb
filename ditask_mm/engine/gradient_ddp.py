"""DDP for gradient-level loss balancers: the per-task gradients are all-reduced, never the summed one.

mmengine's ``MMDistributedDataParallel.train_step`` sums the losses and calls
``optim_wrapper.update_params``, whose backward DDP all-reduces. A
gradient-level balancer (``model.loss_balancer`` with ``kind == 'gradient'``)
needs one gradient per task instead, all-reduced before they are combined.
:class:`GradientBalancingDDP` runs the forward through DDP (so DDP's buffer
and forward handling are unchanged) inside ``no_sync()``, so DDP's reducer
stays idle, and leaves the backward passes and every reduction to
:func:`~ditask_mm.models.losses.balancers.balanced_update`. Without a
gradient-level balancer it is ``MMDistributedDataParallel`` exactly.

:class:`~ditask_mm.engine.CheckedRunner` picks it by itself when the model
has such a balancer (:func:`gradient_balancing_wrapper_cfg`).
"""
from typing import Dict, Optional

import torch
from mmengine.model import MMDistributedDataParallel

from ..models.losses.balancers import balanced_update, is_gradient_balancer
from ..registry import MODEL_WRAPPERS

#: Wrapper types that :func:`gradient_balancing_wrapper_cfg` replaces by :class:`GradientBalancingDDP`.
_REPLACEABLE = ('MMDistributedDataParallel', 'mmengine.MMDistributedDataParallel')
#: How the wrapper config names it: mmengine's Runner looks wrappers up in the root registry, which
#: does not search a grandchild scope (ditask_mm under mmseg) by a bare name, but resolves a module path.
WRAPPER_TYPE = 'ditask_mm.engine.gradient_ddp.GradientBalancingDDP'


@MODEL_WRAPPERS.register_module()
class GradientBalancingDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` whose training step hands the update to a gradient-level balancer."""

    def train_step(self, data, optim_wrapper) -> Dict[str, torch.Tensor]:
        if not is_gradient_balancer(getattr(self.module, 'loss_balancer', None)):
            return super().train_step(data, optim_wrapper)
        with self.no_sync():
            with optim_wrapper.optim_context(self):
                data = self.module.data_preprocessor(data, training=True)
                losses = self._run_forward(data, mode='loss')
            return balanced_update(self.module, losses, optim_wrapper)


def gradient_balancing_wrapper_cfg(model: torch.nn.Module, model_wrapper_cfg: Optional[dict]) -> Optional[dict]:
    """The DDP wrapper config for ``model``: ``GradientBalancingDDP`` when it has a gradient-level balancer.

    Args:
        model: The bare model.
        model_wrapper_cfg: The config's ``model_wrapper_cfg`` (``None``:
            mmengine's default, ``MMDistributedDataParallel``).

    Returns:
        ``model_wrapper_cfg`` unchanged without such a balancer, else a copy
        whose type is ``GradientBalancingDDP`` (as :data:`WRAPPER_TYPE`;
        other keys kept).

    Raises:
        ValueError: The config names another wrapper type (FSDP, a custom
            one), which would sum the task losses.
    """
    if not is_gradient_balancer(getattr(model, 'loss_balancer', None)):
        return model_wrapper_cfg
    cfg = dict(model_wrapper_cfg or {})
    wrapper_type = cfg.get('type', 'MMDistributedDataParallel')
    name = wrapper_type if isinstance(wrapper_type, str) else getattr(wrapper_type, '__name__', str(wrapper_type))
    if name.split('.')[-1] == 'GradientBalancingDDP':
        return cfg
    if name not in _REPLACEABLE:
        raise ValueError(f'model.loss_balancer is {type(model.loss_balancer).__name__}, a gradient-level balancer, '
                         f'which needs model_wrapper_cfg.type=GradientBalancingDDP (per-task gradients, '
                         f'all-reduced before they are combined); the config sets {name!r}. Remove '
                         'model_wrapper_cfg.type or set it to GradientBalancingDDP')
    if model_wrapper_cfg is None:  # what mmengine's Runner.wrap_model builds without a config
        cfg.update(broadcast_buffers=False, find_unused_parameters=False)
    cfg['type'] = WRAPPER_TYPE
    return cfg
