"""Tooling that runs from the checkout and is not installed with ``reid``: the benchmarks behind
``scripts/bench.py`` (tools/bench/) and the prepared GPU check behind ``scripts/gpu_check.sh``
(tools/gpu_check/)."""
