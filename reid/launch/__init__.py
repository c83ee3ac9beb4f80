"""Launching training runs: the logic behind ``scripts/paired.sh`` and ``scripts/study.sh``.

Modules: ``jobs`` (run directories, device slots, runs at once, the final report: what
both commands share), ``cli`` (their shared options and error handling), ``paired`` (two
configs, one seed), ``study`` (configs x seeds) and ``slurm`` (a study as a SLURM job array).

Example::

    python -m reid.launch.study configs/standard.yaml configs/soft.yaml --seeds 0,1,2 --trainer train.py
"""
