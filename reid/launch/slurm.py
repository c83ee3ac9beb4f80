"""A study as a SLURM job array: one array task per unfinished run, then a comparison job.

``study.sh ... --slurm`` writes ``output.root/study_<a>_vs_<b>.sbatch`` (:func:`write_script`)
and submits it (:func:`submit`): ``sbatch --array=<indices of the unfinished runs>``, then the
same script with the argument ``compare`` as a job that depends on the array (``afterany``)
and writes the study's table and figure. Task ``i`` runs exactly the command a local study runs
for run ``i`` (:meth:`TrainerCommand.argv`), its output appended to ``<run dir>.log``; with
``--nproc-per-node N`` that command runs under ``srun`` + ``torchrun`` on every node of the task
(:data:`TORCHRUN`).

Stopping and requeueing: the script asks for ``--signal=B:USR1@180`` (SIGUSR1 to the batch
shell 180 s before the time limit) and passes it on to the trainer as SIGTERM (torchrun's agent
dies of SIGUSR1 but forwards SIGTERM to its processes): ``train.py`` writes a checkpoint at the
next step boundary, or at once during validation or evaluation, and exits with 75 (torchrun's
agent then exits 1). Once warned, the task requeues itself (``scontrol requeue``) whatever the
exit status but 0 (finished) and 2 (a user error), at most ``max_requeues`` times (SLURM's
restart count), and resumes with ``--resume auto``. Preemption and ``scontrol requeue`` send
SIGTERM, which is answered the same way while SLURM requeues the task itself (with
``PreemptMode=REQUEUE``). A task that fails otherwise is not requeued.

Example::

    script = write_script(out / "study_a_vs_b.sbatch", jobs, trainer, compare_argv, name="study_a_vs_b",
                          slurm_out=out / "slurm", workdir=Path.cwd())
    array_id, compare_id = submit(script, [0, 2], ["--partition=gpu", "--gres=gpu:1"], out / "slurm")
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from ..cli import EXIT_STOPPED, EXIT_USER_ERROR
from ..io import atomic_write_text
from .runs import Job, LaunchError, TrainerCommand

# SIGUSR1 reaches the batch shell this many seconds before the time limit: time for the step in
# progress and the checkpoint (validation and evaluation stop at once).
WARNING_SECONDS = 180
# A task requeues itself at most this many times by default (study.sh --max-requeues): a run that
# cannot write a checkpoint before its time limit would otherwise requeue forever.
MAX_REQUEUES = 10
# The folder that holds this ``reid`` package (a checkout or site-packages): the comparison job
# imports the same package as the launcher that wrote its script.
IMPORT_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""#!/bin/bash
# Written by scripts/study.sh --slurm: array task i trains run i of the study with the command a
# local study uses (train.py ... --resume auto); "{{script_name}} compare" writes the comparison.
# study.sh submits it as: sbatch --array=<unfinished runs> [--sbatch options] {{script_name}}
#SBATCH --job-name={{name}}
#SBATCH --output={{slurm_out}}/%x_%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal={{signal}}
cd {{workdir}} || exit 1
export PYTHONUNBUFFERED=1
if [ "${1:-}" = compare ]; then
    PYTHONPATH={{import_root}}${PYTHONPATH:+:$PYTHONPATH} exec {{compare}}
fi
case "${SLURM_ARRAY_TASK_ID:-}" in
{{cases}}
    *) echo "error: no run for array task '${SLURM_ARRAY_TASK_ID:-}' of {{script_path}}" >&2; exit 2 ;;
esac
task="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
restarts="${SLURM_RESTART_COUNT:-0}"
max_requeues={{max_requeues}}
exec >>"$log" 2>&1
echo "== $(date '+%Y-%m-%d %H:%M:%S') $name: SLURM task $task on $(hostname), restart $restarts"
# The time-limit warning (SIGUSR1) and SIGTERM (preemption, scontrol requeue) reach the trainer as SIGTERM:
# it stops at the next step boundary (at once in validation or evaluation) with a checkpoint, exit {{stopped}}.
stop() { kill -TERM "$pid" 2>/dev/null; }
{{launch}}
warned=
trap 'warned=1; stop' USR1
trap 'stop' TERM
"${cmd[@]}" &
pid=$!
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done
wait "$pid"
status=$?
# Warned: requeue whatever ended the trainer (its checkpoint, the signal before training began, torchrun's
# agent), but a finished run (0) and a user error ({{user_error}}); SLURM requeues a preempted task itself.
if [ -n "$warned" ] && [ "$status" -ne 0 ] && [ "$status" -ne {{user_error}} ]; then
    if [ "$restarts" -ge "$max_requeues" ]; then
        echo "error: run $name (task $task) was requeued $restarts times (--max-requeues $max_requeues) and has not finished; it is not requeued again: give its tasks a longer --time in --sbatch, or raise --max-requeues, then run the study command again"
    else
        echo "requeueing $task before its time limit ($((restarts + 1)) of at most $max_requeues); it resumes from its checkpoint"
        scontrol requeue "$task"
    fi
fi
exit "$status"
"""

# --nproc-per-node N: one torchrun agent per node of the task (srun), meeting at the first node; one node
# rendezvous on a free port (--standalone), several at the first node's port 29500 + (job id mod 1000).
# srun ends its step at once on SIGTERM, so the stop signal goes to the step's processes (torchrun's agents
# and their trainers) through scancel, which leaves the batch shell and srun alone.
TORCHRUN = r"""stop() { scancel --signal=TERM "$SLURM_JOB_ID"; }
nodes="${SLURM_NNODES:-1}"
if [ "$nodes" -gt 1 ]; then
    head="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -1)"
    rendezvous=(--nnodes="$nodes" --rdzv-backend=c10d --rdzv-endpoint="$head:$((29500 + SLURM_JOB_ID % 1000))" --rdzv-id="$SLURM_JOB_ID")
else
    rendezvous=(--standalone)
fi
cmd=(srun --nodes="$nodes" --ntasks-per-node=1 --kill-on-bad-exit=1 "${cmd[0]}" -m torch.distributed.run "${rendezvous[@]}" --nproc_per_node={{nproc}} --max-restarts={{max_restarts}} "${cmd[@]:1}")"""

# torchrun restarts a group whose process died (--max-restarts) this many times in one task life.
TORCHRUN_MAX_RESTARTS = 3


def fill(template: str, **fields: object) -> str:
    """``template`` with each ``{{name}}`` replaced by ``fields[name]`` (a KeyError names a missing field).

    Example::

        fill("#SBATCH --job-name={{name}}", name="study_a_vs_b")   # -> "#SBATCH --job-name=study_a_vs_b"
    """
    return re.sub(r"\{\{(\w+)\}\}", lambda m: str(fields[m.group(1)]), template)


def write_script(path: Path, jobs: Sequence[Job], trainer: TrainerCommand, compare_argv: Sequence[str], name: str,
                 slurm_out: Path, workdir: Path, max_requeues: int = MAX_REQUEUES, nproc_per_node: int = 1) -> Path:
    """Write the study's sbatch script: array task ``i`` trains ``jobs[i]`` (under torchrun with
    ``nproc_per_node`` > 1); argument ``compare`` compares. Commands run in ``workdir``."""
    q = shlex.quote
    cases = "\n".join(
        f"    {i}) name={q(job.label)}; log={q(str(job.log_path))}\n"
        f"       cmd=({' '.join(map(q, trainer.argv(job)))}) ;;" for i, job in enumerate(jobs))
    launch = fill(TORCHRUN, nproc=nproc_per_node, max_restarts=TORCHRUN_MAX_RESTARTS) if nproc_per_node > 1 else ""
    text = fill(SCRIPT, script_name=path.name, script_path=q(str(path)), name=name, slurm_out=slurm_out,
                signal=f"B:USR1@{WARNING_SECONDS}", workdir=q(str(workdir)), import_root=q(str(IMPORT_ROOT)),
                compare=" ".join(map(q, compare_argv)), cases=cases, max_requeues=max_requeues, launch=launch,
                stopped=EXIT_STOPPED, user_error=EXIT_USER_ERROR)
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
        # all of what sbatch said: its own error line ("sbatch: unrecognized option ...") comes before its hint
        why = [line.strip() for line in (r.stderr or r.stdout).splitlines() if line.strip()]
        raise LaunchError(f"sbatch {' '.join(args)} failed: {' / '.join(why) or f'exit code {r.returncode}'}; "
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
    itself = os.environ.get("SLURM_JOB_ID")  # a study's follow-up job, which submits its next round
    return [job for job in r.stdout.split() if job != itself] if r.returncode == 0 else []
