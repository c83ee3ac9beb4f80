"""Compare runs from their ``mini_batch_data.mat`` files: curves side by side and a summary table.

Example::

    from reid.analysis import compare
    png, table = compare(["outputs/standard", "outputs/soft"], metrics="train_acc", range_="0:0.1")

See :mod:`reid.analysis.compare` for the conventions (weighting, smoothing, range, x axis).
"""

from .compare import (
    DEFAULT_METRICS,
    Run,
    available_metrics,
    compare,
    curve,
    default_out,
    epoch_positions,
    figure_size_px,
    load_run,
    moving_average,
    parse_range,
    plot_runs,
    range_indices,
    summarize,
    summary_table,
)

__all__ = [
    "DEFAULT_METRICS", "Run", "available_metrics", "compare", "curve", "default_out", "epoch_positions",
    "figure_size_px", "load_run", "moving_average", "parse_range", "plot_runs", "range_indices",
    "summarize", "summary_table",
]
