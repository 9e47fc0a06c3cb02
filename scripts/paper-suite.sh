#!/usr/bin/env bash
# The seed paper's experiment suite (issue 9, docs/results.md): trains every config of a folder,
# evaluates each model on Kodak and on the 50 held-out ImageNet photos (256x256 centre crops, as
# the paper did), and writes Table 1 / Table 2 analogues and the loss-curve figures.
#
#   bash scripts/paper-suite.sh [CONFIG_DIR] [RESULTS_DIR] [NAME_GLOB]
#     CONFIG_DIR   default train/configs/suite-cpu (the CPU-scale suite)
#     RESULTS_DIR  default runs/suite-cpu (tables.md, figures; each run's folder is its out_dir)
#     NAME_GLOB    which configs, default '*' (e.g. 'fix*' for the fix ablation only)
#
# Environment: HVQ_SUITE_JOBS runs at a time (default 2, one libtorch thread each, which is the
# fastest use of this 2-core machine); HVQ_SUITE_DEVICE cpu|cuda (default: each config's own);
# HVQ_SUITE_VGG=0 leaves LPIPS-VGG out of the evaluation (it is most of an evaluation's time on a CPU).
# Reruns resume: a finished run is only re-evaluated; an interrupted one continues exactly.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/env.sh
CONFIGS="${1:-train/configs/suite-cpu}"
RESULTS="${2:-runs/suite-cpu}"
GLOB="${3:-*}"
JOBS="${HVQ_SUITE_JOBS:-2}"
KODAK="${HVQ_KODAK_DIR:-../shared/data/kodak}"
PHOTOS="${HVQ_PHOTOS_DIR:-../shared/data/imagenet-sample}"
LPIPS_DIR="${HVQ_LPIPS_DIR:-../shared/data/lpips}"
BIN="${HVQ_TRAIN_BIN:-target/release/hvq-train}"
[ -x "$BIN" ] || cargo build --release -p hvq-train
mkdir -p "$RESULTS"
DEVICE_ARGS=()
[ -n "${HVQ_SUITE_DEVICE:-}" ] && DEVICE_ARGS=(--device "$HVQ_SUITE_DEVICE")

out_dir() { sed -n 's/^out_dir *= *"\(.*\)"/\1/p' "$1" | head -1; }

train_one() {
  local cfg="$1" name out
  name="$(basename "$cfg" .toml)"
  out="$(out_dir "$cfg")"
  mkdir -p "$out"
  if [ -f "$out/weights.safetensors" ]; then
    echo "suite: $name already trained"
  else
    echo "suite: training $name -> $out"
    OMP_NUM_THREADS=1 "$BIN" train --config "$cfg" --resume "${DEVICE_ARGS[@]}" > "$out/train.out" 2>&1 \
      || { echo "suite: $name FAILED (see $out/train.out)"; return 1; }
  fi
  local vgg=(--lpips-vgg "$LPIPS_DIR/vgg16.safetensors")
  [ "${HVQ_SUITE_VGG:-1}" = 0 ] && vgg=()
  for set in kodak heldout; do
    local data="$KODAK" extra=()
    [ "$set" = heldout ] && { data="$PHOTOS"; extra=(--held-out); }
    OMP_NUM_THREADS=1 "$BIN" eval --weights "$out/weights.safetensors" --data "$data" "${extra[@]}" \
      --center-crop 256 --lpips "$LPIPS_DIR/alexnet.safetensors" "${vgg[@]}" \
      --device cpu --out "$out/eval-$set" > "$out/eval-$set.out" 2>&1 \
      || { echo "suite: eval of $name on $set FAILED (see $out/eval-$set.out)"; return 1; }
  done
  echo "suite: $name done"
}

pids=()
status=0
for cfg in "$CONFIGS"/$GLOB.toml; do
  train_one "$cfg" &
  pids+=($!)
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || status=1; done
done
for p in "${pids[@]}"; do wait "$p" || status=1; done

# Tables and figures over every config of the folder that has been evaluated.
for set in kodak heldout; do
  args=()
  for cfg in "$CONFIGS"/*.toml; do
    e="$(out_dir "$cfg")/eval-$set/eval.json"
    [ -f "$e" ] && args+=("$(basename "$cfg" .toml)=$e")
  done
  [ ${#args[@]} -gt 0 ] && "$BIN" table "${args[@]}" > "$RESULTS/tables-$set.md"
done
for group in fix strategy single; do
  logs=()
  for cfg in "$CONFIGS"/$group*.toml; do
    [ -f "$cfg" ] || continue
    l="$(out_dir "$cfg")/log.jsonl"
    [ -f "$l" ] && logs+=("$(basename "$cfg" .toml)=$l")
  done
  [ ${#logs[@]} -gt 0 ] || continue
  "$BIN" plot "${logs[@]}" --out "$RESULTS/$group-train-l1.png" --metric l1 --smooth 5 >/dev/null
  "$BIN" plot "${logs[@]}" --out "$RESULTS/$group-val-l1.png" --metric val_l1 >/dev/null
done
echo "suite: tables and figures in $RESULTS"
exit "$status"
