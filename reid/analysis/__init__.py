"""Compare runs from their ``mini_batch_data.mat`` files: curves side by side and a summary table.

Example::

    from reid.analysis import compare
    png, table = compare(["outputs/standard", "outputs/soft"], metrics="train_acc", range_="0:0.1")

Modules: ``run_data`` (a run read from its .mat), ``curves`` (smoothing, range, x axis), ``summary``
(the table), ``over_seeds`` (runs over seeds: groups, mean ± std, paired differences, decisions, the seeds a
difference needs), ``decide`` (the stopping rule of a study and its simulation), ``plot`` (the
figures), ``compare`` (all of it, and the conventions in its docstring: weighting,
smoothing, range, x axis).
"""

from .compare import compare, default_out
from .curves import curve, epoch_positions, moving_average, parse_range, range_indices
from .plot import BANDS, DEFAULT_METRICS, figure_size_px, plot_runs, plot_study, study_figure
from .run_data import Run, available_metrics, load_run
from .over_seeds import Group, PairedDifference, paired_difference, study_groups, study_table
from .summary import summarize, summary_table

__all__ = [
    "BANDS", "DEFAULT_METRICS", "Group", "PairedDifference", "Run", "available_metrics", "compare", "curve",
    "default_out", "epoch_positions", "figure_size_px", "load_run", "moving_average", "paired_difference",
    "parse_range", "plot_runs", "plot_study", "range_indices", "study_figure", "study_groups", "study_table",
    "summarize", "summary_table",
]
