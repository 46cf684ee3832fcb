"""A Runner whose ``load_from`` refuses checkpoints that do not fit the model.

mmengine's ``Runner.load_checkpoint`` loads with ``strict=False`` and only
warns about missing keys, so a checkpoint of another architecture silently
leaves the model at its initial weights. :class:`CheckedRunner` compares the
checkpoint with the model first and raises with what to fix.
"""
import torch
from mmengine.runner import Runner

from ..models.adapter_checkpoint import ADAPTER_ONLY, describe_mismatch, read_checkpoint, state_dict_mismatches
from ..registry import RUNNERS


def check_checkpoint_fits(model: torch.nn.Module, filename: str) -> None:
    """Raise ``RuntimeError`` if ``filename`` does not fit ``model``.

    A full checkpoint must provide every model key with the same shape; an
    adapter-only checkpoint (``meta.kind == 'adapter_only'``) must hold only
    model keys with the same shapes. Either must hold at least one tensor.
    """
    state, meta = read_checkpoint(filename)
    if not state:
        raise RuntimeError(f'checkpoint {filename} holds no tensors; expected a state_dict of this model')
    module = getattr(model, 'module', model)
    missing, unexpected, shapes = state_dict_mismatches(module.state_dict(), state)
    if meta.get('kind') == ADAPTER_ONLY:
        missing = []
    if missing or unexpected or shapes:
        raise RuntimeError(describe_mismatch(filename, missing, unexpected, shapes) +
                           '\nUse the config the checkpoint was trained with, or convert the checkpoint.')


@RUNNERS.register_module()
class CheckedRunner(Runner):
    """``Runner`` that checks ``load_from`` checkpoints against the model."""

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys=[(r'^module.', '')]):
        check_checkpoint_fits(self.model, filename)
        return super().load_checkpoint(filename, map_location=map_location, strict=strict, revise_keys=revise_keys)
