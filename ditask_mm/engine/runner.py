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
the newest checkpoint that reads, saying which it skipped. Whether a file
fits is decided by :func:`ditask_mm.models.checkpoint_fit.check_checkpoint_fits`
(importable from here and from :mod:`ditask_mm.engine`). Its logger keeps
mmengine's per-parameter lines at DEBUG (:mod:`.log_filter`).

``CheckedRunner.from_cfg`` first gives the model, the datasets and the
evaluators the config's one task list (:func:`.task_config.resolve_tasks`), so
a mismatch fails before anything is built, naming both lists.
"""
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from ..models.checkpoint_file import CheckpointContents, CheckpointReadError, read_checkpoint
from ..models.checkpoint_fit import check_checkpoint_fits
from ..models.model_checkpoint import checkpoint_has_training_state, is_adapter_only, load_model_checkpoint
from ..registry import RUNNERS
from .log_filter import init_info_at_debug, install_log_filter, optimizer_summary
from .schedule import whole_iteration_schedule
from .task_config import resolve_tasks
from .work_dir import resume_candidates

__all__ = ['CheckedRunner', 'check_checkpoint_fits']


@RUNNERS.register_module()
class CheckedRunner(Runner):
    """``Runner`` whose checkpoint loading is checked (see the module docstring)."""

    @classmethod
    def from_cfg(cls, cfg: Config) -> 'CheckedRunner':
        """``Runner.from_cfg`` after :func:`~.task_config.resolve_tasks` (idempotent: the tools call it too)."""
        return super().from_cfg(resolve_tasks(cfg))

    def _bare_model(self) -> torch.nn.Module:
        return self.model.module if is_model_wrapper(self.model) else self.model

    def build_logger(self, *args, **kwargs) -> MMLogger:
        """``Runner.build_logger``, with mmengine's per-parameter lines demoted to DEBUG (:mod:`.log_filter`)."""
        logger = super().build_logger(*args, **kwargs)
        self._log_filter = install_log_filter(logger)
        return logger

    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        """``Runner.register_hooks``, plus a ``LossBalancerHook`` when the model has a loss balancer and none is set.

        A balancer's epoch-level state (DWA's epoch averages) advances only in
        that hook; a config that sets ``model.loss_balancer`` and forgets the
        hook would otherwise keep DWA's weights at 1 without a word.
        """
        super().register_hooks(default_hooks, custom_hooks)
        from ..models.losses.balancers import LossBalancerHook
        balancer = getattr(self._bare_model(), 'loss_balancer', None)
        if balancer is not None and not any(isinstance(hook, LossBalancerHook) for hook in self.hooks):
            self.register_hook(LossBalancerHook())
            MMLogger.get_current_instance().info(
                f'[ditask_mm] added LossBalancerHook: model.loss_balancer is {type(balancer).__name__}, whose '
                'epoch ends it calls')

    def wrap_model(self, model_wrapper_cfg, model):
        """``Runner.wrap_model``; a distributed model with a gradient-level balancer gets ``GradientBalancingDDP``."""
        if self.distributed:
            from .gradient_ddp import gradient_balancing_wrapper_cfg
            chosen = gradient_balancing_wrapper_cfg(model, model_wrapper_cfg)
            if chosen is not model_wrapper_cfg:
                MMLogger.get_current_instance().info(
                    f'[ditask_mm] model.loss_balancer is {type(model.loss_balancer).__name__} (gradient-level): '
                    'DDP wrapper GradientBalancingDDP')
            model_wrapper_cfg = chosen
        return super().wrap_model(model_wrapper_cfg, model)

    def _init_model_weights(self) -> None:
        """``Runner._init_model_weights``, with the per-parameter initialisation table at DEBUG."""
        with init_info_at_debug(self._bare_model()):
            super()._init_model_weights()

    def build_optim_wrapper(self, optim_wrapper):
        """``Runner.build_optim_wrapper``; the per-parameter lines it causes become one INFO line."""
        log_filter = getattr(self, '_log_filter', None)
        if log_filter is None:
            return super().build_optim_wrapper(optim_wrapper)
        log_filter.reset()
        built = super().build_optim_wrapper(optim_wrapper)
        summary = optimizer_summary(log_filter.counts)
        if summary:
            self.logger.info(summary)
        return built

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

    def _read_checkpoint(self, filename: str) -> CheckpointContents:
        """The contents of ``filename`` (on the CPU), read once per file version."""
        key = (osp.realpath(filename), osp.getmtime(filename), osp.getsize(filename)) if osp.isfile(filename) \
            else None
        cached = getattr(self, '_checkpoint_cache', None)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        contents = read_checkpoint(filename, map_location='cpu')
        self._checkpoint_cache = (key, contents) if key is not None else None
        return contents

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys=[(r'^module.', '')]):
        """Load a full or adapter-only checkpoint into the model, after checking that it reads and fits.

        Same arguments and return value as ``Runner.load_checkpoint``; the file
        is always read to the CPU (the model's parameters keep their device).
        One INFO line names the file (the adapter loader's for an adapter-only one).
        """
        contents = self._read_checkpoint(filename)
        self._checkpoint_cache = None
        check_checkpoint_fits(self.model, filename, contents)
        checkpoint = contents.raw
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        if is_adapter_only(contents.meta):
            load_model_checkpoint(self._bare_model(), filename, checkpoint=contents, logger=self.logger)
        else:
            checkpoint = _load_checkpoint_to_model(self._bare_model(), checkpoint, strict, revise_keys=revise_keys)
            self.logger.info(f'Load checkpoint from {filename}')
        self._has_loaded = True
        return checkpoint

    def resume(self, filename: str, resume_optimizer: bool = True, resume_param_scheduler: bool = True,
               map_location='default') -> None:
        """``Runner.resume``, refusing checkpoints without a training state with what to do instead."""
        contents = self._read_checkpoint(filename)
        if not checkpoint_has_training_state(contents.raw):
            meta = contents.meta
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
                contents = self._read_checkpoint(path)
            except CheckpointReadError as err:
                self.logger.warning(f'--resume: skipping {path}: {err}')
                continue
            if not checkpoint_has_training_state(contents.raw):
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
