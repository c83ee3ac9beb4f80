#!/usr/bin/env bash
# Train two configs as a pair (same seed, same overrides), then compare their curves.
#
#   scripts/paired.sh configs/standard.yaml configs/soft.yaml --seed 0 --set train.epochs=60
#   scripts/paired.sh A.yaml B.yaml --gpus 0,1        # both at once, one GPU each
#
# Options:
#   --seed S          passed to both as --set seed=S (without it each config's own seed is used)
#   --set key=value   forwarded to both trainers (repeatable)
#   --gpus G[,G2]     one id: both runs on that GPU, one after the other; two ids: A on the
#                     first, B on the second, at the same time (CUDA_VISIBLE_DEVICES)
#   --device D        forwarded to train.py (cpu|cuda|auto)
#   -h, --help
# Environment: PYTHON (default: python) runs the launcher and train.py (the one of this checkout,
#   passed to the launcher as --trainer).
#
# Both runs use --resume auto: running the same command again after a crash continues
# both where they stopped, and a finished run returns at once (it is not redone). Each
# run's output is also appended to <run dir>.log; a failed run is named with its error line
# (its first error: line, else its last line).
# Exit status: 0 both runs and the comparison succeeded; 1 a run or the comparison
# failed (named on stderr); 2 usage error or the run directories cannot be resolved.
# The logic is reid/launch/paired.py, sharing reid/launch/jobs.py with study.sh.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null || { echo "error: $PY not found; set PYTHON to the project's Python, e.g. PYTHON=.venv/bin/python" >&2; exit 2; }
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m reid.launch.paired --trainer "$REPO/train.py" "$@"
