"""Training-time helpers: the checked runner, hooks, checkpoint writing, schedules, AMP and distributed set-up."""
from .amp import resolve_amp
from .buffer_sync import BroadcastBuffersHook, broadcast_buffers
from ..fileio import atomic_write_bytes
from .checkpoint_hook import AtomicCheckpointHook, AtomicLocalBackend
from .distributed import launcher_env, setup_cpu_distributed, shutdown_distributed
from .gradient_ddp import GradientBalancingDDP, gradient_balancing_wrapper_cfg
from .hooks import EpochReseedHook, NaNLossGuardHook, NonFiniteLossError
from .runner import CheckedRunner, check_checkpoint_fits
from .task_config import resolve_tasks
from .visualization_hook import MultiTaskVisualizationHook
from .work_dir import last_good_checkpoint, resume_candidates

__all__ = ['AtomicCheckpointHook', 'AtomicLocalBackend', 'BroadcastBuffersHook', 'CheckedRunner', 'EpochReseedHook',
           'GradientBalancingDDP', 'gradient_balancing_wrapper_cfg',
           'MultiTaskVisualizationHook', 'NaNLossGuardHook', 'NonFiniteLossError', 'atomic_write_bytes',
           'broadcast_buffers', 'check_checkpoint_fits', 'last_good_checkpoint', 'launcher_env', 'resolve_amp',
           'resolve_tasks', 'resume_candidates', 'setup_cpu_distributed', 'shutdown_distributed']
