"""A Runner whose ``load_from`` refuses checkpoints that do not fit the model.

mmengine's ``Runner.load_checkpoint`` loads with ``strict=False`` and only
warns about missing keys, so a checkpoint of another architecture silently
leaves the model at its initial weights. :class:`CheckedRunner` compares the
checkpoint with the model first and raises with what to fix.
"""
from typing import Optional

import torch
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

from ..registry import RUNNERS

ADAPTER_ONLY = 'adapter_only'


def check_checkpoint_fits(model: torch.nn.Module, filename: str, checkpoint: Optional[dict] = None) -> None:
    """Raise ``RuntimeError`` if ``filename`` does not fit ``model``.

    A full checkpoint must provide every model key with the same shape; an
    adapter-only checkpoint (``meta.kind == 'adapter_only'``) must hold only
    model keys with the same shapes. Either must hold at least one tensor.
    """
    checkpoint = checkpoint if checkpoint is not None else _load_checkpoint(filename, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(torch.is_tensor(v) for v in state.values()):
        raise RuntimeError(f'checkpoint {filename} holds no tensors; expected a state_dict of this model')
    module = getattr(model, 'module', model)
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    expected = module.state_dict()
    unknown = [k for k in state if k not in expected]
    mismatched = [f'{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}'
                  for k in state if k in expected and torch.is_tensor(state[k]) and state[k].shape != expected[k].shape]
    adapter_only = isinstance(checkpoint, dict) and (checkpoint.get('meta') or {}).get('kind') == ADAPTER_ONLY
    missing = [] if adapter_only else [k for k in expected if k not in state]
    if unknown or mismatched or missing:
        parts = []
        if mismatched:
            parts.append(f'{len(mismatched)} shape mismatches (first: {mismatched[:3]})')
        if missing:
            parts.append(f'{len(missing)} model keys missing (first: {missing[:3]})')
        if unknown:
            parts.append(f'{len(unknown)} keys the model does not have (first: {unknown[:3]})')
        raise RuntimeError(f'checkpoint {filename} does not fit the model of this config '
                           f'({type(module).__name__}): ' + '; '.join(parts) +
                           '. Use the config the checkpoint was trained with, or convert the checkpoint.')


@RUNNERS.register_module()
class CheckedRunner(Runner):
    """``Runner`` that checks ``load_from`` checkpoints against the model."""

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys=[(r'^module.', '')]):
        check_checkpoint_fits(self.model, filename)
        return super().load_checkpoint(filename, map_location=map_location, strict=strict, revise_keys=revise_keys)
