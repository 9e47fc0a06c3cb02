#!/usr/bin/env bash
# One prepared run on a lent GPU machine (torch 2.11.0+cu130 installed, no Rust, no network).
# Carried in .device/: the release hvq-train binary built here against pip torch 2.11.0,
# a 256-px copy of ../shared/data/imagenet-sample, and LPIPS-VGG16 in f16 (see docs/training.md).
# Usage there: bash scripts/gpu-run.sh TRAIN_SECONDS ; results go to $OUT.
set -uo pipefail
BUDGET="${1:-360}"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
TORCH="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
export LD_LIBRARY_PATH="$TORCH/lib:${LD_LIBRARY_PATH:-}"
BIN=.device/hvq-train
chmod +x "$BIN"
# The bench and the configs read LPIPS from ../shared like on a developer machine.
mkdir -p ../shared/data/lpips
cp .device/lpips/vgg16-f16.safetensors ../shared/data/lpips/vgg16.safetensors
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c 'import torch;print("torch",torch.__version__)'; nproc; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# 1. Step time of both presets (issue 2) and libtorch CUDA encode/decode of random small weights.
timeout 100 "$BIN" bench --device cuda --presets small --presets paper --batch 16 --reps 5 \
  > "$OUT/bench.md" 2> "$OUT/bench.jsonl"
cat "$OUT/bench.md"; tail -3 "$OUT/bench.jsonl"

# 2. Train `small` for about BUDGET seconds: steps from the measured step time at the run's batch.
STEP_MS=$(python3 - "$OUT/bench.jsonl" <<'PY'
import json,sys
for l in open(sys.argv[1]):
    try: d=json.loads(l)
    except Exception: continue
    if d.get("preset")=="small": print(d["ms"]*2)   # bench batch 16 -> run batch 32
PY
)
STEPS=$(python3 -c "print(max(200,int($BUDGET*1000/float('${STEP_MS:-1000}'))))")
echo "small step ~${STEP_MS} ms at batch 32 -> $STEPS steps"
START=$(date +%s)
# SIGINT makes the trainer write a checkpoint before it stops, so a slow run still exports.
timeout -s INT $((BUDGET + 60)) "$BIN" train --config .device/small-gpu.toml --device cuda --steps "$STEPS" \
  > "$OUT/train.log" 2>&1
echo "train exit $? after $(( $(date +%s) - START )) s"; tail -c 2000 "$OUT/train.log"
RUN=runs/small-gpu
if [ ! -f "$RUN/checkpoint.safetensors" ] && [ $(( $(date +%s) - START )) -lt 60 ]; then
  echo "first run failed early: retrying without k-means init and dead-code restart"
  timeout -s INT $((BUDGET)) "$BIN" train --config .device/small-gpu-plain.toml --device cuda --steps "$STEPS" \
    > "$OUT/train-plain.log" 2>&1
  echo "plain train exit $?"; tail -c 2000 "$OUT/train-plain.log"
fi
cp "$RUN/log.jsonl" "$OUT/" 2>/dev/null || cp "$RUN"/*.jsonl "$OUT/" 2>/dev/null
"$BIN" export --checkpoint "$RUN" --out "$OUT/small-gpu.safetensors" --f16 2>&1 | tail -2
ls -la "$OUT"
