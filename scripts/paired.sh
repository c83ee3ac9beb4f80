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
# Environment: PYTHON (default: python) runs train.py and scripts/compare.py;
#   REID_TRAIN_PY (default: train.py beside scripts/) is the trainer script.
#
# Both runs use --resume auto: running the same command again after a crash continues
# both where they stopped, and a finished run returns at once (it is not redone).
# Exit status: 0 both runs and the comparison succeeded; 1 a run or the comparison
# failed (named on stderr); 2 usage error or the run directories cannot be resolved.

set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die_usage() { echo "error: $1" >&2; echo "usage: $0 CONFIG_A CONFIG_B [--seed S] [--set key=value ...] [--gpus 0,1] [--device D]" >&2; exit 2; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$SCRIPT_DIR")"
PY="${PYTHON:-python}"
TRAIN="${REID_TRAIN_PY:-$REPO/train.py}"

configs=()
sets=()
seed=""
gpus=""
device=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --seed) [[ $# -ge 2 ]] || die_usage "--seed needs a value"; seed="$2"; shift 2 ;;
    --seed=*) seed="${1#*=}"; shift ;;
    --set) [[ $# -ge 2 ]] || die_usage "--set needs key=value"; sets+=("$2"); shift 2 ;;
    --set=*) sets+=("${1#*=}"); shift ;;
    --gpus) [[ $# -ge 2 ]] || die_usage "--gpus needs ids like 0,1"; gpus="$2"; shift 2 ;;
    --gpus=*) gpus="${1#*=}"; shift ;;
    --device) [[ $# -ge 2 ]] || die_usage "--device needs cpu, cuda or auto"; device="$2"; shift 2 ;;
    --device=*) device="${1#*=}"; shift ;;
    -*) die_usage "unknown option $1" ;;
    *) configs+=("$1"); shift ;;
  esac
done
[[ ${#configs[@]} -eq 2 ]] || die_usage "give exactly two configs (got ${#configs[@]})"
for s in ${sets[@]+"${sets[@]}"}; do
  [[ "$s" == *=* ]] || die_usage "--set $s is not key=value"
done
[[ -z "$seed" || "$seed" =~ ^[0-9]+$ ]] || die_usage "--seed $seed is not a non-negative integer"
IFS=',' read -r -a gpu_ids <<< "$gpus"
[[ ${#gpu_ids[@]} -le 2 ]] || die_usage "--gpus takes one or two ids (got $gpus)"
[[ -f "$TRAIN" ]] || { echo "error: $TRAIN not found; run from a checkout of the project" >&2; exit 2; }

CONFIG_A="${configs[0]}"
CONFIG_B="${configs[1]}"
for c in "$CONFIG_A" "$CONFIG_B"; do
  [[ -f "$c" ]] || die_usage "config $c not found"
done

# The same overrides for both runs; --seed last so it wins over a --set seed=.
common=()
for s in ${sets[@]+"${sets[@]}"}; do common+=(--set "$s"); done
if [[ -n "$seed" ]]; then
  common+=(--set "seed=$seed")
else
  echo "note: no --seed given: each config's own seed is used (the pair shares the data order only if they match)" >&2
fi
train_args=(--resume auto)
[[ -n "$device" ]] && train_args+=(--device "$device")

# Ask the trainer where each run lives (output.root/output.name after overrides).
run_dir_of() {
  local out
  if ! out="$("$PY" "$TRAIN" --config "$1" ${common[@]+"${common[@]}"} --print-run-dir)"; then
    echo "error: cannot resolve the run directory of $1 (train.py --print-run-dir failed, see above)" >&2
    exit 2
  fi
  out="$(printf '%s\n' "$out" | sed '/^[[:space:]]*$/d' | tail -n 1)"
  [[ -n "$out" ]] || { echo "error: train.py --print-run-dir printed nothing for $1" >&2; exit 2; }
  printf '%s\n' "$out"
}
RUN_A="$(run_dir_of "$CONFIG_A")"
RUN_B="$(run_dir_of "$CONFIG_B")"
if [[ "$RUN_A" == "$RUN_B" ]]; then
  echo "error: $CONFIG_A and $CONFIG_B both resolve to the run directory $RUN_A; give them different output.name" >&2
  exit 2
fi
echo "run A: $CONFIG_A -> $RUN_A"
echo "run B: $CONFIG_B -> $RUN_B"

train_cmd() {  # train_cmd CONFIG: exec so that a background job's $! is train.py itself
  exec "$PY" "$TRAIN" --config "$1" "${train_args[@]}" ${common[@]+"${common[@]}"}
}

rc_a=0
rc_b=0
if [[ ${#gpu_ids[@]} -eq 2 ]]; then
  # Both at once, one GPU each; output lines prefixed [A]/[B] so they can be told apart.
  # $! is train.py itself (exec), so wait gives its exit code and kill reaches it.
  ( export CUDA_VISIBLE_DEVICES="${gpu_ids[0]}"; train_cmd "$CONFIG_A" ) > >(sed -u 's/^/[A] /') 2>&1 &
  pid_a=$!
  ( export CUDA_VISIBLE_DEVICES="${gpu_ids[1]}"; train_cmd "$CONFIG_B" ) > >(sed -u 's/^/[B] /') 2>&1 &
  pid_b=$!
  # Ctrl-C / kill stops both trainers (they resume later with --resume auto).
  trap 'kill -TERM "$pid_a" "$pid_b" 2>/dev/null || true' INT TERM
  wait "$pid_a" || rc_a=$?
  wait "$pid_b" || rc_b=$?
  trap - INT TERM
else
  # One after the other; B is trained even when A failed (the runs are independent).
  if [[ ${#gpu_ids[@]} -eq 1 ]]; then export CUDA_VISIBLE_DEVICES="${gpu_ids[0]}"; fi
  echo "training A ($CONFIG_A)"
  ( train_cmd "$CONFIG_A" ) || rc_a=$?
  echo "training B ($CONFIG_B)"
  ( train_cmd "$CONFIG_B" ) || rc_b=$?
fi

failed=0
report() {  # report LABEL CONFIG RUN_DIR RC
  if [[ "$4" -eq 0 ]]; then
    echo "run $1 ($2): finished: $3"
  else
    echo "error: run $1 ($2) failed with exit code $4; its run directory is $3 (see $3/log.txt); fix it and rerun this command to resume" >&2
    failed=1
  fi
}
report A "$CONFIG_A" "$RUN_A" "$rc_a"
report B "$CONFIG_B" "$RUN_B" "$rc_b"
if [[ $failed -ne 0 ]]; then
  echo "no comparison written: both runs must finish first" >&2
  exit 1
fi

name_a="$(basename "$RUN_A")"
name_b="$(basename "$RUN_B")"
OUT="$(dirname "$RUN_A")/compare_${name_a}_vs_${name_b}.png"
if ! "$PY" "$SCRIPT_DIR/compare.py" "$RUN_A" "$RUN_B" --out "$OUT"; then
  echo "error: the comparison of $RUN_A and $RUN_B failed (see above)" >&2
  exit 1
fi
echo "run A: $RUN_A"
echo "run B: $RUN_B"
echo "comparison: $OUT and ${OUT%.png}.md"
