"""A Runner that loads every kind of checkpoint right, or refuses it with a reason.

mmengine's ``Runner`` has three gaps that give wrong numbers or lose a run:

* ``load_checkpoint`` loads with ``strict=False`` and only warns about
  missing keys, so a checkpoint of another architecture silently leaves the
  model at its initial weights;
* ``test()`` never calls ``init_weights()``, so an adapter-only checkpoint
  would sit on randomly initialised frozen weights;
* ``--resume`` takes whatever ``last_checkpoint`` names, even a truncated
  file, and starts over without a warning when there is none.

:class:`CheckedRunner` checks the file first (it must be readable and fit the
model), puts an adapter-only checkpoint on top of the config's pretrained
weights (:mod:`ditask_mm.models.model_checkpoint`), and on ``--resume`` takes
the newest checkpoint that reads, saying which it skipped.
"""
import os.path as osp
from typing import Any, Optional

import torch
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from ..models.adapter_checkpoint import (ADAPTER_ONLY, describe_mismatch, read_checkpoint, split_checkpoint,
                                         state_dict_mismatches)
from ..models.checkpoint_file import CheckpointReadError, load_checkpoint_file
from ..models.model_checkpoint import checkpoint_has_training_state, is_adapter_only, load_model_checkpoint
from ..registry import RUNNERS
from .schedule import whole_iteration_schedule
from .work_dir import resume_candidates


def check_checkpoint_fits(model: torch.nn.Module, filename: str, checkpoint: Optional[Any] = None) -> None:
    """Raise ``RuntimeError`` if ``filename`` does not fit ``model``.

    A full checkpoint must provide every model key with the same shape; an
    adapter-only checkpoint (``meta.kind == 'adapter_only'``) must hold only
    model keys with the same shapes. Either must hold at least one tensor.
    """
    state, meta = read_checkpoint(filename) if checkpoint is None else split_checkpoint(checkpoint, filename)
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
    """``Runner`` whose checkpoint loading is checked (see the module docstring)."""

    def _bare_model(self) -> torch.nn.Module:
        return self.model.module if is_model_wrapper(self.model) else self.model

    def build_param_scheduler(self, scheduler):
        """``Runner.build_param_scheduler``, with fractional epoch bounds rounded to whole iterations first."""
        if not isinstance(scheduler, list) and not isinstance(scheduler, dict):
            return super().build_param_scheduler(scheduler)  # already built
        try:
            epoch_length = len(self.train_dataloader)  # the built loader (the train loop exists by now)
        except (AttributeError, TypeError, RuntimeError):
            epoch_length = None
        if epoch_length:
            scheduler = whole_iteration_schedule(scheduler, epoch_length, self.logger)
        return super().build_param_scheduler(scheduler)

    def _read_checkpoint(self, filename: str) -> Any:
        """The content of ``filename`` (on the CPU), read once per file version."""
        key = (osp.realpath(filename), osp.getmtime(filename), osp.getsize(filename)) if osp.isfile(filename) \
            else None
        cached = getattr(self, '_checkpoint_cache', None)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        checkpoint = load_checkpoint_file(filename, map_location='cpu')
        self._checkpoint_cache = (key, checkpoint) if key is not None else None
        return checkpoint

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys=[(r'^module.', '')]):
        """Load a full or adapter-only checkpoint into the model, after checking that it reads and fits.

        Same arguments and return value as ``Runner.load_checkpoint``; the file
        is always read to the CPU (the model's parameters keep their device).
        """
        checkpoint = self._read_checkpoint(filename)
        self._checkpoint_cache = None
        check_checkpoint_fits(self.model, filename, checkpoint)
        _, meta = split_checkpoint(checkpoint, filename)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        if is_adapter_only(meta):
            load_model_checkpoint(self._bare_model(), filename, checkpoint=checkpoint, logger=self.logger)
            self.logger.info(f'Load adapter-only checkpoint from {filename} on top of the pretrained weights')
        else:
            checkpoint = _load_checkpoint_to_model(self._bare_model(), checkpoint, strict, revise_keys=revise_keys)
            self.logger.info(f'Load checkpoint from {filename}')
        self._has_loaded = True
        return checkpoint

    def resume(self, filename: str, resume_optimizer: bool = True, resume_param_scheduler: bool = True,
               map_location='default') -> None:
        """``Runner.resume``, refusing checkpoints without a training state with what to do instead."""
        checkpoint = self._read_checkpoint(filename)
        if not checkpoint_has_training_state(checkpoint):
            _, meta = split_checkpoint(checkpoint, filename)
            what = 'an adapter-only checkpoint' if is_adapter_only(meta) else 'a checkpoint'
            raise RuntimeError(
                f'--resume {filename}: {what} without the training state (epoch, iteration, message hub, '
                'optimizer) that resuming needs. To start a new run from its weights, use '
                f'--cfg-options load_from={filename} without --resume'
                + ('; to resume, extract the adapters with tools/model_converters/extract_adapters.py '
                   '--with-training-state.' if is_adapter_only(meta) else '.'))
        super().resume(filename, resume_optimizer=resume_optimizer, resume_param_scheduler=resume_param_scheduler,
                       map_location=map_location)

    def _find_resumable(self) -> Optional[str]:
        """The newest readable checkpoint of the work dir; logs every one it skips."""
        for path in resume_candidates(self.work_dir):
            if not osp.isfile(path):
                self.logger.warning(f'--resume: {path} (named by last_checkpoint) does not exist; looking for an '
                                    'earlier checkpoint')
                continue
            try:
                checkpoint = self._read_checkpoint(path)
            except CheckpointReadError as err:
                self.logger.warning(f'--resume: skipping {path}: {err}')
                continue
            if not checkpoint_has_training_state(checkpoint):
                self.logger.warning(f'--resume: skipping {path}: it holds no training state')
                continue
            return path
        return None

    def load_or_resume(self) -> None:
        """``Runner.load_or_resume``; auto-resume takes the newest readable checkpoint and says so."""
        if self._has_loaded:
            return None
        if not (self._resume and self._load_from is None):
            return super().load_or_resume()
        resume_from = self._find_resumable()
        if resume_from is None:
            self.logger.warning(f'--resume: no checkpoint to resume from in {osp.abspath(self.work_dir)} (no '
                                'readable last_checkpoint, epoch_*.pth or iter_*.pth); training starts from the '
                                'beginning')
            return None
        newest = resume_candidates(self.work_dir)[0]
        if osp.realpath(resume_from) != osp.realpath(newest):
            self.logger.warning(f'--resume: the newest checkpoint {newest} cannot be used; resuming from the '
                                f'previous good one, {resume_from}')
        self.logger.info(f'Auto resumed from the latest checkpoint {resume_from}.')
        self.resume(resume_from)
        self._has_loaded = True
