"""Model analysis: trainable-parameter counts by group, what DiTASK did to the spectra, and task affinity."""
from .compare import RunComparisonError, RunSummary, compare_runs, comparison_markdown, summarize_run
from .parameters import count_parameters, split_model
from .spectra import spectrum_curves
from .task_affinity import (AffinityResult, gradient_affinity, measure_task_affinity, propose_groups,
                            propose_stage_groups, stage_shared_parameters, write_affinity_outputs, write_group_config)

__all__ = ['count_parameters', 'split_model', 'spectrum_curves', 'compare_runs', 'comparison_markdown', 'summarize_run',
           'RunSummary', 'RunComparisonError', 'AffinityResult', 'gradient_affinity', 'measure_task_affinity',
           'propose_groups', 'propose_stage_groups', 'stage_shared_parameters', 'write_affinity_outputs',
           'write_group_config']
