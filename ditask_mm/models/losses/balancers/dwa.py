"""Dynamic weight average (Liu, Johns & Davison, CVPR 2019, "End-to-End Multi-Task Learning with Attention")."""
from typing import Dict, Mapping, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor

from ....registry import MODELS
from .base import LossBalancer, all_reduce_mean


@MODELS.register_module()
class DWA(LossBalancer):
    """Weigh each task by the rate at which its epoch-average loss falls.

    For epoch ``e`` (counting from 1) with ``T`` tasks,

        ``w_t(e) = T · softmax_t(r_t(e−1) / temperature)``,
        ``r_t(e−1) = L̄_t(e−1) / L̄_t(e−2)``,

    where ``L̄_t(e)`` is task ``t``'s loss averaged over the steps of epoch
    ``e`` (Liu et al. 2019, Sec. 3.3; temperature 2 as in the
    paper). The weights are 1 for the first two epochs, and sum to ``T``.
    A task whose loss falls more slowly gets a larger weight.

    State (persistent buffers, saved in the checkpoint, so a resumed run
    continues with the same weights): the running sum of this epoch's losses
    and the number of steps (``epoch_loss_sum``, ``epoch_steps``), the
    averages of the last two completed epochs (``last_average``,
    ``second_last_average``) and the number of completed epochs
    (``completed_epochs``). Each training step adds its losses averaged over
    the ranks (an all-reduce of ``T`` numbers, ``torch.distributed`` when
    initialised with more than one rank), so the running sums, and with them
    every buffer, are identical on all ranks at every moment; :meth:`epoch_end`
    (called on every rank by :class:`LossBalancerHook`) then averages and
    shifts them with the same arithmetic on every rank. Reducing per step
    rather than once at the epoch end keeps the buffers right when rank 0's
    buffers are broadcast mid-epoch (``BroadcastBuffersHook`` before a
    validation, DDP's ``broadcast_buffers``) and makes a mid-epoch checkpoint
    hold the global sums. Accumulation happens in training mode only. With
    equal per-rank batches the average over steps and ranks equals the
    average of the global-batch losses.

    Extra cost per step: one all-reduce of ``T`` numbers and ``T`` additions.

    Args:
        tasks: The segmentor's tasks.
        temperature: The softmax temperature; larger means more uniform.
    """

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if not temperature > 0:
            raise ValueError(f'DWA.temperature must be positive, got {temperature!r}')
        self.temperature = float(temperature)
        num_tasks = len(self.tasks)
        self.register_buffer('epoch_loss_sum', torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer('epoch_steps', torch.zeros((), dtype=torch.float64))
        self.register_buffer('last_average', torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer('second_last_average', torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer('completed_epochs', torch.zeros((), dtype=torch.long))

    def current_weights(self) -> Tensor:
        """The weights of the current epoch, shape ``(T,)`` in ``self.tasks`` order (fp32)."""
        if int(self.completed_epochs) < 2:
            return torch.ones(len(self.tasks), device=self.last_average.device)
        ratios = self.last_average / self.second_last_average
        return (len(self.tasks) * torch.softmax(ratios / self.temperature, dim=0)).float()

    def task_weights(self, task_losses: Mapping[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        if self.training:  # every rank trains; outside training a loss may be evaluated on one rank alone
            self.epoch_loss_sum += all_reduce_mean(self._stacked(task_losses)).to(self.epoch_loss_sum)
            self.epoch_steps += 1
        weights = self.current_weights()
        return {task: weights[i] for i, task in enumerate(self.tasks)}, {}

    def epoch_end(self) -> None:
        """Average this epoch's (rank-averaged) losses over its steps, shift the history, reset the sums."""
        loss_sum, steps = self.epoch_loss_sum, self.epoch_steps
        if steps <= 0:
            print_log('DWA.epoch_end: no training step recorded this epoch; the weights stay as they are',
                      logger='current')
            return
        average = loss_sum / steps
        if not bool((average > 0).all()):
            raise ValueError(f'DWA needs positive epoch-average losses to form ratios, got '
                             f'{dict(zip(self.tasks, average.tolist()))}')
        self.second_last_average.copy_(self.last_average)
        self.last_average.copy_(average)
        self.completed_epochs += 1
        self.epoch_loss_sum.zero_()
        self.epoch_steps.zero_()
