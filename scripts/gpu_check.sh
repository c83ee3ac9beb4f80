#!/usr/bin/env bash
# The prepared GPU check: eight parts, each in its own process with its own time limit, one report.
#
#   scripts/gpu_check.sh --market-root data/market1501-mini      # one GPU, at most 9.5 minutes
#   scripts/gpu_check.sh --device cpu --tiny --out /tmp/check     # the CPU rehearsal (about 12 s of CPU; the suite runs it)
#
# Options:
#   --market-root DIR   the Market-1501 (mini) set: bounding_box_train/, query/, bounding_box_test/
#   --device cuda|cpu   default cuda
#   --tiny              synthetic data, tiny images and models
#   --out DIR           default outputs/gpu_check: report.md, report.json, the PNGs, logs.tar.gz (nothing else)
#   --work DIR          default /tmp/reid_gpu_check: runs, caches, checkpoints, logs
#   --time-limit S      seconds for the whole check (default 570; 780 with --tiny)
# Environment: PYTHON (default python3): an interpreter with torch, torchvision, scipy, pillow,
#   pyyaml, tqdm, matplotlib and pytest. Nothing is installed or downloaded: the project runs
#   from this checkout (PYTHONPATH). The logic lives in tools/gpu_check/.
# Exit status: 0 every part ok; 1 a part failed or timed out; 2 usage error; 130 interrupted.

set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
exec "${PYTHON:-python3}" -m tools.gpu_check "$@"
