#!/usr/bin/env bash
# Every figure the README gives for a model (by default the embedded one), in one command:
#
#   bash scripts/eval-default.sh [WEIGHTS] [OUT_DIR]     # default codec/models/default.safetensors, runs/eval-default
#
# 1. quality on full-size Kodak            (hvq-train eval; OUT/kodak/eval.{md,json})
# 2. quality and sharing on the 50 held-out photos' 256x256 centre crops (OUT/heldout)
# 3. sharing on Kodak's 256x256 centre crops (OUT/kodak-crops)
# 4. sharing on all 1000 photos' crops from tokens alone (scripts/sharing_tokens.py; OUT/sharing-1000.txt)
# 5. what the context model saves, per level (scripts/context_gain.py; OUT/context-gain.md)
# 6. rate-distortion against JPEG, WebP and AVIF at the rate a reader pays (scripts/rd_kodak.py;
#    OUT/rd-kodak-prefix.{md,json,png})
# 7. rate-distortion encoding (`hvq encode --rd-lambda`): the sweep over λ (the rd_sweep example;
#    OUT/rate-distortion-sweep.md), step 6 again at λ = 0.1 (OUT/rd-kodak-prefix-rd0.1.*) and the plot
#    (OUT/rate-distortion.png, with step 6's JSON); about 45 minutes
#
# Needs release builds of hvq-train, hvq, hvq-compare (`. scripts/env.sh && cargo build --release
# -p hvq-train -p hvq-cli`), the venv's pillow/numpy/matplotlib and cjpeg/cwebp/avifenc (see the
# README's "Against JPEG, WebP and AVIF"). About 50 minutes on the project's 2-core machine (2026-12-04, shared with a test run).
# HVQ_EVAL_STEPS picks a subset, e.g. HVQ_EVAL_STEPS="1 2" (default: all seven).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/env.sh
WEIGHTS="${1:-codec/models/default.safetensors}"
OUT="${2:-runs/eval-default}"
STEPS="${HVQ_EVAL_STEPS:-1 2 3 4 5 6 7}"
KODAK="${HVQ_KODAK_DIR:-../shared/data/kodak}"
PHOTOS="${HVQ_PHOTOS_DIR:-../shared/data/imagenet-sample}"
LPIPS="${HVQ_LPIPS_DIR:-../shared/data/lpips}"
PY=.venv/bin/python
T=target/release/hvq-train
H=target/release/hvq
for b in "$T" "$H" target/release/hvq-compare; do
  [ -x "$b" ] || { echo "eval-default: $b missing; build it first (see the header)" >&2; exit 2; }
done
mkdir -p "$OUT"
codebook="$($PY -c 'import json,struct,sys
f=open(sys.argv[1],"rb"); n=struct.unpack("<Q",f.read(8))[0]
print(json.loads(json.loads(f.read(n))["__metadata__"]["hvq.config"])["codebook_size"])' "$WEIGHTS")"
has() { [[ " $STEPS " == *" $1 "* ]]; }
vgg=(--lpips "$LPIPS/alexnet.safetensors" --lpips-vgg "$LPIPS/vgg16.safetensors")

has 1 && $T eval --weights "$WEIGHTS" --data "$KODAK" "${vgg[@]}" --device cpu --out "$OUT/kodak"
has 2 && $T eval --weights "$WEIGHTS" --data "$PHOTOS" --held-out --center-crop 256 "${vgg[@]}" \
  --device cpu --out "$OUT/heldout"
has 3 && $T eval --weights "$WEIGHTS" --data "$KODAK" --center-crop 256 "${vgg[@]}" --device cpu \
  --out "$OUT/kodak-crops"
if has 4; then
  [ -d "$OUT/crops" ] || $PY scripts/sharing_tokens.py crop "$PHOTOS" "$OUT/crops"
  rm -rf "$OUT/tok"
  $H tokenize-dir --backend cpu -j 2 -m "$WEIGHTS" -o "$OUT/tok" "$OUT/crops"
  $PY scripts/sharing_tokens.py stats "$OUT/tok" "$codebook" | tee "$OUT/sharing-1000.txt"
fi
has 5 && $PY scripts/context_gain.py --model "$WEIGHTS" --kodak "$KODAK" --hvq "$H" | tee "$OUT/context-gain.md"
has 6 && $PY scripts/rd_kodak.py --model "$WEIGHTS" --kodak "$KODAK" --out "$OUT/rd-kodak-prefix"
if has 7; then
  cargo build -q --release -p hvq-codec --example rd_sweep
  target/release/examples/rd_sweep --model "$WEIGHTS" 0,0.03,0.1,0.3,1 "$KODAK"/*.png | tee "$OUT/rate-distortion-sweep.md"
  $PY scripts/rd_kodak.py --model "$WEIGHTS" --kodak "$KODAK" --rd-lambda 0.1 --out "$OUT/rd-kodak-prefix-rd0.1"
  runs=("$OUT/rd-kodak-prefix-rd0.1.json")
  [ -f "$OUT/rd-kodak-prefix.json" ] && runs=("$OUT/rd-kodak-prefix.json" "${runs[@]}")
  $PY scripts/rd_lambda_plot.py "$OUT/rate-distortion-sweep.md" "${runs[@]}" --out "$OUT/rate-distortion.png"
fi
echo "eval-default: results under $OUT"
