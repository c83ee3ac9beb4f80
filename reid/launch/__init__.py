"""Launching training runs: the logic behind ``scripts/paired.sh`` and ``scripts/study.sh``.

Modules: ``runs`` (what a launch trains: runs with their run directories, the trainer's command
line, device slots), ``jobs`` (running them here: runs at once, their output, the final report),
``cli`` (their shared options and error handling), ``paired`` (two configs, one seed), ``study``
(configs x seeds) and ``slurm`` (a study as a SLURM job array).

Example::

    python -m reid.launch.study configs/standard.yaml configs/soft.yaml --seeds 0,1,2 --trainer train.py
"""
