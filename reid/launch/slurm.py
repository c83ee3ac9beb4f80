"""A study as a SLURM job array: one array task per unfinished run, then a comparison job.

``study.sh ... --slurm`` writes ``output.root/study_<a>_vs_<b>.sbatch`` (:func:`write_script`)
and submits it (:func:`submit`): ``sbatch --array=<indices of the unfinished runs>``, then the
same script with the argument ``compare`` as a job that depends on the array (``afterany``)
and writes the study's table and figure. Task ``i`` runs exactly the command a local study runs
for run ``i`` (:meth:`TrainerCommand.argv`), its output appended to ``<run dir>.log``.

Stopping and requeueing: the script asks for ``--signal=B:USR1@180`` (SIGUSR1 to the batch
shell 180 s before the time limit) and passes it on to ``train.py``, which writes a checkpoint
at the next step boundary and exits with 75; the task then requeues itself
(``scontrol requeue``) and resumes with ``--resume auto``. Preemption and ``scontrol
requeue`` send SIGTERM, which ``train.py`` answers the same way while SLURM requeues the
task itself. A task that fails otherwise is not requeued.

Example::

    script = write_script(out / "study_a_vs_b.sbatch", jobs, trainer, compare_argv, name="study_a_vs_b",
                          slurm_out=out / "slurm")
    array_id, compare_id = submit(script, [0, 2], ["--partition=gpu", "--gres=gpu:1"], out / "slurm")
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from ..cli import EXIT_STOPPED
from ..io import atomic_write_text
from .jobs import Job, LaunchError, TrainerCommand

# SIGUSR1 reaches the batch shell this many seconds before the time limit: time for the step in
# progress, the checkpoint and the .mat (an evaluation in progress finishes first).
WARNING_SECONDS = 180
# The folder that holds this ``reid`` package (a checkout or site-packages): the comparison job
# imports the same package as the launcher that wrote its script.
IMPORT_ROOT = Path(__file__).resolve().parents[2]


def write_script(path: Path, jobs: Sequence[Job], trainer: TrainerCommand, compare_argv: Sequence[str], name: str,
                 slurm_out: Path) -> Path:
    """Write the study's sbatch script: array task ``i`` trains ``jobs[i]``; argument ``compare`` compares."""
    q = shlex.quote
    cases = "\n".join(
        f"    {i}) name={q(job.label)}; log={q(str(job.log_path))}\n"
        f"       cmd=({' '.join(map(q, trainer.argv(job)))}) ;;" for i, job in enumerate(jobs))
    text = f"""#!/bin/bash
# Written by scripts/study.sh --slurm: array task i trains run i of the study with the command a
# local study uses (train.py ... --resume auto); "{path.name} compare" writes the comparison.
# study.sh submits it as: sbatch --array=<unfinished runs> [--sbatch options] {path.name}
#SBATCH --job-name={name}
#SBATCH --output={slurm_out}/%x_%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@{WARNING_SECONDS}
cd {q(os.getcwd())} || exit 1
export PYTHONUNBUFFERED=1
if [ "${{1:-}}" = compare ]; then
    PYTHONPATH={q(str(IMPORT_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}} exec {' '.join(map(q, compare_argv))}
fi
case "${{SLURM_ARRAY_TASK_ID:-}}" in
{cases}
    *) echo "error: no run for array task '${{SLURM_ARRAY_TASK_ID:-}}' of {path}" >&2; exit 2 ;;
esac
task="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
exec >>"$log" 2>&1
echo "== $(date '+%Y-%m-%d %H:%M:%S') $name: SLURM task $task on $(hostname), restart ${{SLURM_RESTART_COUNT:-0}}"
# SIGUSR1 (the time-limit warning) and SIGTERM (preemption, scontrol requeue) go on to train.py,
# which stops at the next step boundary with a checkpoint and exits {EXIT_STOPPED}.
warned=
trap 'warned=1; kill -USR1 "$pid" 2>/dev/null' USR1
trap 'kill -TERM "$pid" 2>/dev/null' TERM
"${{cmd[@]}}" &
pid=$!
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
wait "$pid"
status=$?
# stopped by the warning: with its checkpoint (exit {EXIT_STOPPED}), or by the signal itself before training began
if [ -n "$warned" ] && {{ [ "$status" -eq {EXIT_STOPPED} ] || [ "$status" -eq 138 ]; }}; then
    echo "requeueing $task before its time limit; it resumes from its checkpoint"
    scontrol requeue "$task"
fi
exit "$status"
"""
    atomic_write_text(path, text)
    path.chmod(0o755)
    return path


def array_spec(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``: the ``--array`` value."""
    parts, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(str(start) if start == i else f"{start}-{i}")
            start = None
    return ",".join(parts)


def sbatch(args: Sequence[str]) -> str:
    """Run ``sbatch --parsable ARGS``; the job id."""
    exe = shutil.which("sbatch")
    if exe is None:
        raise LaunchError("--slurm needs sbatch, which is not on PATH; run on a SLURM login node, or use "
                          "--print-commands for another scheduler")
    r = subprocess.run([exe, "--parsable", *args], capture_output=True, text=True)
    if r.returncode != 0:
        why = (r.stderr or r.stdout).strip().splitlines()
        raise LaunchError(f"sbatch {' '.join(args)} failed: {why[-1] if why else f'exit code {r.returncode}'}; "
                          "check the --sbatch options (partition, account, time)")
    return r.stdout.strip().split(";")[0]


def submit(script: Path, indices: Sequence[int], options: Sequence[str], slurm_out: Path) -> tuple[str, str]:
    """Submit the array of ``indices`` and the comparison after it; (array job id, comparison job id)."""
    slurm_out.mkdir(parents=True, exist_ok=True)
    array_id = sbatch([f"--array={array_spec(indices)}", *options, str(script)])
    compare_id = sbatch([f"--dependency=afterany:{array_id}", f"--output={slurm_out}/%x_compare_%j.out",
                         *options, str(script), "compare"])
    return array_id, compare_id


def queued_jobs(name: str) -> list[str]:
    """Ids of this user's pending or running jobs named ``name`` (a study submitted before)."""
    exe = shutil.which("squeue")
    if exe is None:
        return []
    r = subprocess.run([exe, "-h", f"--user={os.getuid()}", "-n", name, "-o", "%i"], capture_output=True, text=True)
    return r.stdout.split() if r.returncode == 0 else []
