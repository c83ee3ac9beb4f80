#!/usr/bin/env bash
# The prepared GPU check: five parts, each with its own time budget, one report.
#
#   scripts/gpu_check.sh --market-root data/market1501-mini       # one GPU, under 8 minutes
#   scripts/gpu_check.sh --device cpu --tiny --out /tmp/check      # the CPU rehearsal (a minute or two; make test runs it)
#
# Options:
#   --market-root DIR   the Market-1501 (mini) set: bounding_box_train/, query/, bounding_box_test/
#   --device cuda|cpu   default cuda
#   --tiny              synthetic data, tiny images and models
#   --out DIR           default outputs/gpu_check: report.md, report.json, the PNGs, runs/, logs/
# Environment: PYTHON (default python3): an interpreter with torch, torchvision, scipy, pillow,
#   pyyaml, tqdm and matplotlib (and pytest for part 2). Nothing is installed or downloaded: the
#   project runs from this checkout (PYTHONPATH). The logic lives in reid/gpu_check/.
# Exit status: 0 every part ok; 1 a part failed or timed out; 2 usage error; 130 interrupted.

set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m reid.gpu_check "$@"
