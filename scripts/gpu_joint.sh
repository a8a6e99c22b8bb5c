#!/usr/bin/env bash
# Joint fine-tuning runs side by side on one GPU, each stopped by a time budget.
#
#   scripts/gpu_joint.sh PACK DLIB_WEIGHTS OUT_DIR SECONDS [RUNS_FILE]
#
# PACK is a training pack (`facekit joint --write-pack PACK`), DLIB_WEIGHTS dlib's .dat or
# its converted .pt, SECONDS the training time of every run. RUNS_FILE has one run a line:
# `NAME RATE FLAGS...` (flags of `facekit joint`); by default scripts/gpu_joint_runs.txt.
# Each run writes OUT_DIR/NAME/ (model.pt, summary.json, history.jsonl) and OUT_DIR/NAME.log,
# and ends in OUT_DIR/NAME.tar.gz (model, summary, history, log). Install a finished run here
# with `facekit weights install OUT_DIR/NAME` (the manifest records how it was made).
#
# Made for a lent machine with nothing but PyTorch (the device tool's H200): facekit runs
# from this checkout (PYTHONPATH), the pack replaces LFW and dlib's detector, and nothing is
# downloaded. CPU threads are shared out among the runs.
set -uo pipefail
cd "$(dirname "$0")/.."
pack=$1 dlib=$2 out=$3 seconds=$4 runs=${5:-scripts/gpu_joint_runs.txt}
mkdir -p "$out"
export FACEKIT_DLIB_MODEL="$dlib" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export FACEKIT_CACHE="${FACEKIT_CACHE:-$out/.cache}"
n=$(grep -cv '^\s*\(#\|$\)' "$runs")
threads=$(( $(nproc) / (n > 0 ? n : 1) )); [ "$threads" -lt 1 ] && threads=1
python3 - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
pids=()
while read -r name rate flags; do
  case "$name" in ''|\#*) continue ;; esac
  # shellcheck disable=SC2086
  python3 -m facekit.cli joint --pack "$pack" --rate "$rate" --time-limit "$seconds" --steps 1000000000 --threads "$threads" \
    --checkpoint-every 1000000 --log-every 100 --out "$out/$name" $flags >"$out/$name.log" 2>&1 &
  pids+=("$!")
  echo "started $name ($rate $flags), pid $!"
done <"$runs"
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
while read -r name rate flags; do
  case "$name" in ''|\#*) continue ;; esac
  tail -n 3 "$out/$name.log"
  files=()
  for f in model.pt summary.json history.jsonl; do [ -f "$out/$name/$f" ] && files+=("$name/$f"); done
  # no model.pt (a run that broke after training): its last checkpoint instead
  [ -f "$out/$name/model.pt" ] || { [ -f "$out/$name/checkpoint.pt" ] && files+=("$name/checkpoint.pt"); }
  tar -czf "$out/$name.tar.gz" -C "$out" "${files[@]}" "$name.log"
done <"$runs"
exit $status
