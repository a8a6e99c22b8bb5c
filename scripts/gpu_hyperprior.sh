#!/usr/bin/env bash
# Phase one (rate and distortion) of recipes/hyperprior.toml's GPU preset on a lent
# machine that has PyTorch but neither LFW nor a network.
#
#   scripts/gpu_hyperprior.sh pack [DIR]        # here, with FACEKIT_LFW set: write DIR/1 .. DIR/N (default gpu/)
#   scripts/gpu_hyperprior.sh run OUT [ARGS...] # there, from the checkout's root, with DIR's parts beside it
#   scripts/gpu_hyperprior.sh split DIR | join DIR DEST   # the two halves of the packing, alone
#
# pack writes the identity-disjoint split of LFW (people in no pair of pairs.txt: 1,549 JPEGs
# byte for byte, pairs.txt, SHA256SUMS; `python -m facekit.data.lfw_subset`), whose split and
# held-out images are the full LFW's, and wheels: constriction (the held-out check codes for
# real) for CPython 3.10-3.13 on manylinux x86-64, and tqdm. The working tree and what a call
# carries travel together, at most 64 MiB, and the tracked tree (mostly facekit/weights) leaves
# less than the pack's 14 MB beside it. So split packs them into one .tar.xz, cut into parts
# DIR/1/, DIR/2/, ... of at most PART_BYTES each (default: what is left beside the tracked tree
# less 1 MiB); each part folder also holds PACK, the whole archive's sha256 and part count.
# git ignores gpu/. On the lent machine, one call carries each part, on the same warm machine
# (a carried folder stays there between calls): calls 1 .. N-1 carry DIR/1 .. DIR/N-1 with a
# command such as `ls -l gpu/*`, and the last carries DIR/N and runs `run`.
#
# run joins the parts (join: a missing or damaged part is one clear error), installs a missing
# constriction or tqdm from the wheels (into a temporary folder, offline), prints torch, CUDA
# and the GPU, checks the split's SHA256SUMS and runs
#   facekit train --recipe recipes/hyperprior.toml --preset gpu --phase rd \
#     --root LFW --out OUT/hp2gpu --time-limit $TIME_LIMIT ARGS...
# with facekit from this checkout (PYTHONPATH), FACEKIT_LFW the joined split, FACEKIT_CACHE=OUT/.cache.
# TIME_LIMIT (default 450 s of training) replaces the preset's 780 s, which does not fit a
# command of 10 minutes; HARD_LIMIT (default 560 s) stops facekit whatever it does, so that the
# packing below still happens. ARGS come last (e.g. --device cpu --stop-after 3 for a test).
# At the end OUT holds seven files:
#   hp2gpu.log          everything run printed
#   hp2gpu.tar.gz       the run folder hp2gpu/ (run.json, recipe.toml, chunks.jsonl, rd/) without
#                       rd/checkpoint.pt
#   hp2gpu/checkpoint.pt, model.pt, summary.json, history.csv, config.json   (phase one's, from rd/)
# Back here: tar -xzf OUT/hp2gpu.tar.gz -C runs && cp OUT/hp2gpu/checkpoint.pt runs/hp2gpu/rd/
# gives a run folder that `facekit train --recipe ... --out runs/hp2gpu --resume` continues.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RECIPE=recipes/hyperprior.toml
MAX_TREE_BYTES=$((64 * 1024 * 1024)) MARGIN_BYTES=$((1024 * 1024))

die() { echo "gpu_hyperprior.sh: $*" >&2; exit 1; }

pack_data() {  # DIR
  [ -n "${FACEKIT_LFW:-}" ] || die "set FACEKIT_LFW to the full LFW (lfw-deepfunneled.tgz and pairs.txt)"
  PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m facekit.data.lfw_subset "$1/lfw" --root "$FACEKIT_LFW" \
    || die "could not write $1/lfw"
}

pack_wheels() {  # DIR: the versions installed here, else the newest
  local dir=$1/wheels name version spec v
  rm -rf "$dir" && mkdir -p "$dir" || die "cannot write $dir"
  for name in constriction tqdm; do
    version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null) || version=
    spec=$name${version:+==$version}
    if [ "$name" = tqdm ]; then  # pure Python: one wheel for every version
      "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$dir" "$spec" || die "pip download $spec failed"
      continue
    fi
    for v in 3.10 3.11 3.12 3.13; do
      "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$v" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dir" "$spec" || die "pip download $spec for CPython $v failed"
    done
  done
  ls -l "$dir"
}

tree_bytes() {  # what travels with every call: tracked files and untracked ones git does not ignore
  git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

split_pack() {  # DIR: DIR/lfw and DIR/wheels -> DIR/1 .. DIR/N (each PACK + pack.part)
  local dir=$1 tree room part archive sha total n i
  [ -f "$dir/lfw/split.json" ] && [ -d "$dir/wheels" ] || die "$dir holds no lfw/ and wheels/ to split: run '$0 pack $dir'"
  tree=$(tree_bytes) room=$((MAX_TREE_BYTES - tree - MARGIN_BYTES))
  [ "$room" -ge $((1024 * 1024)) ] || die "the working tree ($tree bytes) leaves no room beside it for a part of 1 MiB in 64 MiB"
  part=${PART_BYTES:-$room}
  [[ "$part" =~ ^[1-9][0-9]*$ ]] && [ "$part" -le "$room" ] || die "PART_BYTES should be a number of bytes from 1 to $room, got $part"
  archive=$(mktemp "$dir/.pack-XXXXXX")
  tar -C "$dir" -cf - lfw wheels | xz -6 -T1 >"$archive" || die "cannot write $archive"
  sha=$(sha256sum "$archive" | cut -d' ' -f1)
  total=$(stat -c %s "$archive")
  n=$(( (total + part - 1) / part ))
  find "$dir" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' -exec rm -rf {} +
  split -b "$part" -d -a 4 "$archive" "$archive." || die "cannot cut $archive into parts"
  for ((i = 1; i <= n; i++)); do
    mkdir -p "$dir/$i" && mv "$archive.$(printf %04d $((i - 1)))" "$dir/$i/pack.part" || die "cannot write $dir/$i"
    printf 'sha256 %s\nparts %s\nbytes %s\n' "$sha" "$n" "$total" >"$dir/$i/PACK"
  done
  rm -f "$archive"
  echo "$dir: $total bytes of .tar.xz in $n parts of at most $part bytes (beside the working tree's $tree of $MAX_TREE_BYTES)"
  ls -l "$dir"/[0-9]*/pack.part
}

join_pack() {  # DIR DEST: DIR/1 .. DIR/N -> DEST/lfw and DEST/wheels, checked
  local dir=$1 dest=$2 sha n total i archive
  [ -f "$dir/1/PACK" ] || die "no $dir/1/PACK here: run '$0 pack' where LFW is, and carry each part of $dir (see the header)"
  sha=$(awk '$1 == "sha256" {print $2}' "$dir/1/PACK")
  n=$(awk '$1 == "parts" {print $2}' "$dir/1/PACK")
  total=$(awk '$1 == "bytes" {print $2}' "$dir/1/PACK")
  for ((i = 1; i <= n; i++)); do
    [ -f "$dir/$i/pack.part" ] || die "part $i of $n is missing: carry $dir/$i in an earlier call on the same warm machine"
    cmp -s "$dir/1/PACK" "$dir/$i/PACK" || die "$dir/$i is a part of another pack than $dir/1: run '$0 pack' again and carry every part"
  done
  mkdir -p "$dest" || die "cannot write $dest"
  archive=$dest/pack.tar.xz
  for ((i = 1; i <= n; i++)); do cat "$dir/$i/pack.part"; done >"$archive"
  [ "$(stat -c %s "$archive")" = "$total" ] && [ "$(sha256sum "$archive" | cut -d' ' -f1)" = "$sha" ] \
    || die "the parts of $dir do not join into the packed archive (sha256 $sha): a part is damaged"
  "$PY" -m tarfile -e "$archive" "$dest" || die "cannot unpack $archive"
  rm -f "$archive"
}

run_phase_one() {  # OUT ARGS...
  local out=$1 site status args pack
  shift
  mkdir -p "$out" && out=$(cd "$out" && pwd) || die "cannot write $out"
  [ -e "$out/hp2gpu" ] && die "$out/hp2gpu exists: choose another OUT"
  pack=$(mktemp -d)
  join_pack "${FACEKIT_GPU_PACK:-gpu}" "$pack"
  site=$(mktemp -d)
  {
    echo "== $(date -u +%FT%TZ) $RECIPE, preset gpu, phase rd; pack $pack ($(tr -d '\n ' <"$pack/lfw/split.json"))"
    for mod in constriction tqdm; do
      "$PY" -c "import $mod" 2>/dev/null && continue
      echo "installing $mod from $pack/wheels"
      PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --no-index --no-deps --no-compile --find-links "$pack/wheels" --target "$site" "$mod" \
        || { echo "gpu_hyperprior.sh: cannot install $mod from $pack/wheels"; exit 1; }
    done
    export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    export FACEKIT_LFW="$pack/lfw" FACEKIT_CACHE="$out/.cache"
    "$PY" - <<'EOF' || exit 1
import sys
from importlib.metadata import version

import constriction  # noqa: F401
import torch

print("python", sys.version.split()[0], *(f"{m} {version(m)}" for m in ("torch", "numpy", "constriction", "tqdm")),
      "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
    (cd "$pack/lfw" && sha256sum -c --quiet SHA256SUMS) || { echo "gpu_hyperprior.sh: $pack/lfw is damaged"; exit 1; }
    echo "$pack/lfw: $(grep -c . "$pack/lfw/SHA256SUMS") files match SHA256SUMS"
    args=(train --recipe "$RECIPE" --preset gpu --phase rd --root "$FACEKIT_LFW" --out "$out/hp2gpu"
          --time-limit "${TIME_LIMIT:-450}" "$@")
    echo "facekit ${args[*]}   (stopped after ${HARD_LIMIT:-560} s at the latest)"
    timeout -k 20 "${HARD_LIMIT:-560}" "$PY" -m facekit.cli "${args[@]}"
    status=$?
    echo "== $(date -u +%FT%TZ) facekit train exited with $status"
    exit $status
  } 2>&1 | tee "$out/hp2gpu.log"
  status=${PIPESTATUS[0]}
  rm -rf "$site" "$pack" "$out/.cache"
  pack_run "$out" || status=1
  ls -lR "$out" | tee -a "$out/hp2gpu.log"
  return "$status"
}

pack_run() {  # OUT: the run folder as seven files at most two folders down
  local out=$1 rd=$1/hp2gpu/rd f keep
  [ -d "$out/hp2gpu" ] || return 1
  [ -f "$rd/checkpoint.pt" ] && mv "$rd/checkpoint.pt" "$out/checkpoint.pt.tmp"
  tar -czf "$out/hp2gpu.tar.gz" -C "$out" hp2gpu || return 1
  keep=$(mktemp -d)
  for f in model.pt summary.json history.csv config.json; do [ -f "$rd/$f" ] && cp "$rd/$f" "$keep/"; done
  rm -rf "$out/hp2gpu" && mv "$keep" "$out/hp2gpu" && chmod 755 "$out/hp2gpu"
  [ -f "$out/checkpoint.pt.tmp" ] && mv "$out/checkpoint.pt.tmp" "$out/hp2gpu/checkpoint.pt"
  for f in "$out"/hp2gpu.tar.gz "$out"/hp2gpu/*; do  # what comes back: 16 MiB a file at most
    [ "$(stat -c %s "$f")" -le $((16 * 1024 * 1024)) ] || echo "gpu_hyperprior.sh: warning: $f is over 16 MiB"
  done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  pack) dir=${1:-gpu}; pack_data "$dir"; pack_wheels "$dir"; split_pack "$dir" && rm -rf "${dir:?}/lfw" "${dir:?}/wheels" ;;
  split) [ $# -eq 1 ] || die "usage: $0 split DIR"; split_pack "$1" ;;
  join) [ $# -eq 2 ] || die "usage: $0 join DIR DEST"; join_pack "$1" "$2" ;;
  run) [ $# -ge 1 ] || die "usage: $0 run OUT [ARGS...]"; run_phase_one "$@" ;;
  *) die "usage: $0 pack [DIR] | run OUT [ARGS...] | split DIR | join DIR DEST" ;;
esac
