"""Training-time helpers: hooks and CPU distributed set-up."""
from .distributed import setup_cpu_distributed, shutdown_distributed
from .hooks import EpochReseedHook, NaNLossGuardHook, NonFiniteLossError
from .runner import CheckedRunner, check_checkpoint_fits
from .visualization_hook import MultiTaskVisualizationHook

__all__ = ['CheckedRunner', 'EpochReseedHook', 'NaNLossGuardHook', 'NonFiniteLossError', 'check_checkpoint_fits', 'setup_cpu_distributed', 'shutdown_distributed',
           'MultiTaskVisualizationHook']
