"""Compare runs from their ``mini_batch_data.mat`` files: curves side by side and a summary table.

Example::

    from reid.analysis import compare
    png, table = compare(["outputs/standard", "outputs/soft"], metrics="train_acc", range_="0:0.1")

Modules: ``runs`` (reading a .mat), ``curves`` (smoothing, range, x axis), ``summary`` (the
table), ``plot`` (the figure), ``compare`` (all of it, and the conventions in its docstring:
weighting, smoothing, range, x axis).
"""

from .compare import compare, default_out
from .curves import curve, epoch_positions, moving_average, parse_range, range_indices
from .plot import DEFAULT_METRICS, figure_size_px, plot_runs
from .runs import Run, available_metrics, load_run
from .summary import summarize, summary_table

__all__ = [
    "DEFAULT_METRICS", "Run", "available_metrics", "compare", "curve", "default_out", "epoch_positions",
    "figure_size_px", "load_run", "moving_average", "parse_range", "plot_runs", "range_indices",
    "summarize", "summary_table",
]
