"""L1 losses for dense regression: surface normals and depth.

Normals follow DiTASK's ``NormalsLoss(normalize=True, size_average=True,
norm=1)`` (``docs/method.md`` §6); depth is the masked L1 used for NYUD.
Invalid normals are 255 in all channels (``AddIgnoreRegions``); invalid depth
is 0 in the raw maps and as the padding value, and 255 after
``AddIgnoreRegions`` (``docs/method.md`` §9), so both are ignored.
"""
import torch.nn.functional as F
from torch import Tensor

from ...registry import MODELS
from .base import MTLPixelLoss, masked_mean, match_channel_target


@MODELS.register_module()
class NormalsL1Loss(MTLPixelLoss):
    """L1 between the L2-normalised prediction and the target normals.

    ``pred`` of shape (B, 3, H, W) is raw; it is divided by
    ``max(‖pred‖, eps)`` over the channel axis. ``target`` has the same shape
    and holds unit normals, or ``ignore_index`` in all channels at invalid
    pixels. The loss is ``Σ |n̂ − n|`` over the valid elements (checked
    elementwise, as in the original) divided by their number (3 per valid
    pixel).

    Args:
        ignore_index: Target value of invalid elements.
        eps: Lower bound of the norm in the normalisation.
        loss_weight: Factor applied to the loss.
        loss_name: Name of the loss item.
    """

    def __init__(self, ignore_index: int = 255, eps: float = 1e-12, loss_weight: float = 1.0,
                 loss_name: str = 'loss_normals') -> None:
        super().__init__(loss_weight=loss_weight, loss_name=loss_name)
        self.ignore_index = ignore_index
        self.eps = float(eps)

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        if target.shape != pred.shape:
            raise self._shape_error(pred, target, str(tuple(pred.shape)))
        valid = target != self.ignore_index
        normals = F.normalize(pred, p=2.0, dim=1, eps=self.eps)
        return masked_mean((normals - target.to(pred.dtype)).abs(), valid)


@MODELS.register_module()
class DepthL1Loss(MTLPixelLoss):
    """Mean absolute depth error over the valid pixels of the batch.

    ``pred`` has shape (B, 1, H, W); ``target`` (metres) has shape
    (B, 1, H, W) or (B, H, W). A pixel is valid iff its target is neither
    ``ignore_index`` nor ≤ 0 (0 marks missing depth and padding); NaN
    targets are invalid too.

    Args:
        ignore_index: Target value of invalid pixels.
        loss_weight: Factor applied to the loss.
        loss_name: Name of the loss item.
    """

    def __init__(self, ignore_index: int = 255, loss_weight: float = 1.0,
                 loss_name: str = 'loss_depth') -> None:
        super().__init__(loss_weight=loss_weight, loss_name=loss_name)
        self.ignore_index = ignore_index

    def compute(self, pred: Tensor, target: Tensor) -> Tensor:
        target = match_channel_target(self, pred, target)
        valid = (target != self.ignore_index) & (target > 0)
        return masked_mean((pred - target.to(pred.dtype)).abs(), valid)
