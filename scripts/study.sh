#!/usr/bin/env bash
# Train every config with every seed, then compare the configs over the seeds.
#
#   scripts/study.sh configs/standard.yaml configs/soft.yaml --seeds 0,1,2,3,4 [--set key=value ...]
#   scripts/study.sh A.yaml B.yaml C.yaml --seeds 0,1,2 --gpus 0,1 --per-gpu 3
#
# Options:
#   --seeds S1,S2,... the seeds (required but with --until-decided); run <stem>_s<seed> trains into
#                     output.root/<stem>_s<seed>
#   --until-decided   seeds 0,1,2, then one more per round, until each comparison with the first config is decided
#                     (--max-seeds N, default 10; --margin M points for "equivalent"; --metric mAP|rank1)
#   --grid KEY=V1,V2  variants of the last config, one per value (repeatable), named e.g. soft_uw0.5; the values
#                     are YAML: "data.size=[64,32],[128,64]" has two
#   --extend          a rerun with a raised train.epochs trains finished runs on (without it, it trains nothing
#                     and says what would change)
#   --set key=value   forwarded to every run (repeatable; seed and output.name are the study's)
#   --gpus G1,G2,...  spread the runs over these GPUs, each run pinned to one (CUDA_VISIBLE_DEVICES)
#   --per-gpu N       with --gpus: N runs at once on each GPU (default 1)
#   --jobs N          without --gpus: N runs at once (default 1)
#   --device D        forwarded to train.py (cpu|cuda|auto)
#   --slurm           submit the unfinished runs as a SLURM job array (output.root/study_<a>_vs_<b>.sbatch),
#                     then a comparison job after it; prints the job ids and each run's log
#   --sbatch "OPTS"   with --slurm: sbatch options passed through unchanged (partition, --gres=gpu:1, --time ...);
#                     one option, several in one argument, or --sbatch=--time=60
#   --max-requeues N  with --slurm: a task warned of its time limit requeues itself at most N times (default 10)
#   --nproc-per-node N  with --slurm: each run under srun + torchrun, N processes on each node of its task
#   --print-commands  print one train.py command per unfinished run, one per line (any other scheduler)
#   --compare-only    train nothing; write the comparison once every run has finished
#   -h, --help
# Environment: PYTHON (default: python) runs the launcher and train.py (the one of this checkout,
#   passed to the launcher as --trainer).
#
# Every config, --set and --grid value is checked before anything trains (one error: line per
# problem, exit 2). Every run uses --resume auto: the same command again after a crash or Ctrl-C
# leaves finished runs untouched and continues the interrupted ones. A failed run does not stop the others; the
# end names it with its error line (its first error: line, else its last line; all of its
# output is in <run dir>.log). When every run finished: output.root/study_<stem>_vs_<stem>.png
# and .md, the mean curves with bands and the table over seeds (see README, "Studies over seeds").
# Exit status: 0 every run and the comparison succeeded; 1 a run or the comparison failed;
# 2 usage error; 130 interrupted. The logic is reid/launch/study.py.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null || { echo "error: $PY not found; set PYTHON to the project's Python, e.g. PYTHON=.venv/bin/python" >&2; exit 2; }
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m reid.launch.study --trainer "$REPO/train.py" "$@"
