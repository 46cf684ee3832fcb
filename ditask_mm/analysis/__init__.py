"""Model analysis: trainable-parameter counts by group, and what DiTASK did to the spectra."""
from .compare import RunComparisonError, RunSummary, compare_runs, comparison_markdown, summarize_run
from .parameters import count_parameters, split_model
from .spectra import spectrum_curves

__all__ = ['count_parameters', 'split_model', 'spectrum_curves', 'compare_runs', 'comparison_markdown', 'summarize_run',
           'RunSummary', 'RunComparisonError']
