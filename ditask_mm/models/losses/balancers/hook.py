"""The hook that gives loss balancers their epoch boundaries."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ....registry import HOOKS


@HOOKS.register_module()
class LossBalancerHook(Hook):
    """Call ``model.loss_balancer.epoch_end()`` after every training epoch, on every rank.

    Balancers with epoch-level state (:class:`DWA`) update it there; their
    ``epoch_end`` may all-reduce across ranks, so every rank must run this
    hook (mmengine runs custom hooks on all ranks). A DDP-wrapped model is
    unwrapped first. It runs before the checkpoint hook writes the epoch's
    checkpoint (priority ``ABOVE_NORMAL``), so the checkpoint holds the state
    of the next epoch and a resumed run continues with the same weights.
    """

    priority = 'ABOVE_NORMAL'

    @staticmethod
    def _balancer(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        balancer = getattr(model, 'loss_balancer', None)
        if balancer is None:
            raise AttributeError(f'LossBalancerHook is configured but the model ({type(model).__name__}) has no '
                                 "loss_balancer; set model.loss_balancer=dict(type='DWA') (or another balancer) "
                                 'or remove LossBalancerHook from custom_hooks')
        return balancer

    def before_train(self, runner) -> None:
        self._balancer(runner)  # fail at the start, not after the first epoch

    def after_train_epoch(self, runner) -> None:
        self._balancer(runner).epoch_end()
