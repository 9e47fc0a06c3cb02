#!/usr/bin/env bash
# The one prepared run on a lent GPU machine (torch 2.11.0+cu130 installed, no Rust, no network),
# in one call of at most 10 minutes. Prepare .device/ here first with scripts/gpu-prepare.sh.
#
#   bash scripts/gpu-run.sh TRAIN_SECONDS     # on the GPU machine; results under $OUT
#   HVQ_GPU_DRY_RUN=1 bash scripts/gpu-run.sh # here, on the CPU: every step at toy size
#
# What it measures, in order (each step is time-boxed so the call ends in time):
#   1. the card, driver and torch version;
#   2. `hvq-train bench` of both presets, before (the trainer of bc1de38) and after issue 10's step
#      changes, f32 and bf16; 10 tiny steps through NCCL at world size 1;
#   3. training of the next default model for TRAIN_SECONDS, with validation records: by default the
#      embedded model continued (train/configs/default-model-warm.toml, its horizon set from step 1's
#      measured step time so the decay ends in time);
#      HVQ_GPU_TRAIN=scratch trains from scratch with the shared-codebook switches instead
#      (train/configs/default-model-shared.toml, its own horizon, cut by the budget);
#   4. its export (f16) and its sharing and quality on 256x256 centre crops of all 1000 photos
#      and of the 50 held-out ones, with the embedded model on the held-out ones beside it.
#   5. wgpu on the card's Vulkan driver (issue 12): adapter, the wgpu conformance, kernel, model and
#      cross-check tests, the wgpu bench of both presets at batch 1 and 32, the same cases on
#      libtorch CUDA (`hvq-train codec-bench`, same weights and images) joined into one table
#      (wgpu-vs-libtorch.md), each in f32 and f16 kernels, the device time, GFLOP/s and share of
#      every kernel per case (timestamp queries, wgpu-kernels.md), and `hvq tokenize-dir --backend wgpu`
#      on 256 photos in both precisions.
#      Step 5 runs first and takes about 5 minutes at most (every part is time-boxed). It needs its own call (`gpu-run.sh wgpu`, see
#      the size note at step 5): what travels is limited to 64 MiB.
set -uo pipefail
BUDGET="${1:-190}"
MODE="${1:-}"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
DEV=.device
BIN=/tmp/hvq-train # unpacked from $DEV/hvq-train.xz below
case "${HVQ_GPU_TRAIN:-warm}" in
  warm) CFG="$DEV/configs/default-model-warm.toml" ;;
  scratch) CFG="$DEV/configs/default-model-shared.toml" ;;
  *) echo "gpu-run.sh: HVQ_GPU_TRAIN is warm or scratch, not '$HVQ_GPU_TRAIN'" >&2; exit 2 ;;
esac
# A call without its carry would spend device time measuring nothing: refuse it at once.
PREP="bash scripts/gpu-prepare.sh"
if [ "$MODE" = wgpu ]; then NEEDS=("$DEV/wgpu.tar.xz" "$DEV/gl" "$DEV/photos" "$DEV/hvq-train.xz"); PREP="$PREP wgpu"
else NEEDS=("$CFG" "$DEV/data" "$DEV/hvq-train.xz" "$DEV/lpips"); fi
for need in "${NEEDS[@]}"; do
  [ -e "$need" ] || { echo "gpu-run.sh: $need is missing: run '$PREP' here and name .device/* in carry" >&2; exit 2; }
done
if [ "${HVQ_GPU_DRY_RUN:-0}" = 1 ]; then
  # The same steps on this machine's CPU, at toy size, to check the script before spending GPU time.
  . scripts/env.sh
  DEVICE=cpu; BUDGET=60
  sed -e 's/^image_size = .*/image_size = 64/' -e 's/^batch = .*/batch = 2/' -e 's/^kmeans_step = .*/kmeans_step = 2/' \
      -e 's/^val_images = .*/val_images = 2/' -e 's/^val_every = .*/val_every = 2/' -e 's/^steps = .*/steps = 6/' \
      -e 's/^log_every = .*/log_every = 2/' -e 's/^warmup_steps = .*/warmup_steps = 1/' -e 's/^device = .*/device = "cpu"/' \
      -e "s#^out_dir = .*#out_dir = \"$OUT/dry-run\"#" "$CFG" > "$OUT/dry.toml"
  CFG="$OUT/dry.toml"; EVAL_LIMIT=(--limit 4)
else
  TORCH="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')"
  export LD_LIBRARY_PATH="$TORCH/lib:${LD_LIBRARY_PATH:-}"
  DEVICE=cuda; EVAL_LIMIT=()
fi
[ -f "$DEV/hvq-train.xz" ] && xz -dc "$DEV/hvq-train.xz" > "$BIN" && chmod +x "$BIN"
RUN="$(sed -n 's/^out_dir *= *"\(.*\)"/\1/p' "$CFG")"
# The config and the evaluations read the int8 LPIPS in $DEV; the bench reads ../shared like on a
# developer machine, so it gets the int8 copies where ../shared is absent.
mkdir -p ../shared/data/lpips 2>/dev/null
for net in vgg16 alexnet; do
  [ -f "../shared/data/lpips/$net.safetensors" ] || cp "$DEV/lpips/$net-int8.safetensors" "../shared/data/lpips/$net.safetensors"
done
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi";
  python3 -c 'import torch;print("torch",torch.__version__)' 2>&1; nproc; date -u; } > "$OUT/machine.txt"
cat "$OUT/machine.txt"

# 5 (run first: it must not be cut by the training budget). wgpu on Vulkan.
wgpu_on_vulkan() {
  local bins=/tmp/hvq-wgpu-bins
  mkdir -p "$bins" && tar -C "$bins" -xJf "$DEV/wgpu.tar.xz" || { echo "no $DEV/wgpu.tar.xz"; return; }
  if [ "$DEVICE" = cuda ]; then
    for f in "$DEV"/gl/*.deb; do dpkg -x "$f" /; done; ldconfig
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && [ -z "$(ls /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ 2>/dev/null)" ] && export VK_DRIVER_FILES="$icd"
  fi
  # The test binaries find tests/vectors at the path they were built at.
  [ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
  for t in conformance kernels model cross_check; do
    timeout 45 "$bins/$t" --nocapture > "$OUT/wgpu-test-$t.txt" 2>&1; echo "wgpu test $t: exit $?"
    grep -E "adapter|driver|features|limits|agree|cross-check|worst|test result" "$OUT/wgpu-test-$t.txt" | head -9
  done
  local presets=small,paper sizes=256x256,768x512
  [ "$DEVICE" = cpu ] && { presets=small; sizes=32x32; }
  local batches=1,32
  [ "$DEVICE" = cpu ] && batches=1,2
  # Both kernel precisions (f16 where the driver offers shader-f16); the JSON is rewritten after
  # every case, so a cut run keeps what it measured.
  HVQ_BENCH_RUNS=3 HVQ_BENCH_PRESETS=$presets HVQ_BENCH_SIZES=$sizes HVQ_BENCH_BATCHES=$batches \
    HVQ_BENCH_PRECISIONS=f32,f16 HVQ_BENCH_JSON="$OUT/wgpu-bench.json" \
    HVQ_BENCH_PROFILE="$OUT/wgpu-kernels.md" HVQ_BENCH_PEAK_TFLOPS=67 timeout 170 "$bins/wgpu" --bench \
    > "$OUT/wgpu-bench.txt" 2>&1
  echo "wgpu bench: exit $?"; grep -v "^|" "$OUT/wgpu-bench.txt"
  # Per kernel (timestamp queries): the first case's tables; all of them are in wgpu-kernels.md.
  head -40 "$OUT/wgpu-kernels.md" 2> /dev/null
  # The same cases on libtorch (CUDA on the GPU machine), same weights and images.
  if [ -x "$BIN" ]; then
    # Fused attention: libtorch at its best (the codec's own attention is not fused either way).
    timeout 120 "$BIN" codec-bench --device "$DEVICE" --presets "$presets" --sizes "$sizes" --batches "$batches" \
      --runs 3 --fused-attention --json "$OUT/libtorch-codec-bench.json" > "$OUT/libtorch-codec-bench.txt" 2>&1
    echo "libtorch codec bench: exit $?"; cat "$OUT/libtorch-codec-bench.txt"
    # H200 and H100 SXM: 67 TFLOP/s dense FP32 (no tensor cores), the ceiling for WGSL f32 kernels.
    python3 scripts/bench-join.py "$OUT/wgpu-bench.json" "$OUT/libtorch-codec-bench.json" 67 \
      > "$OUT/wgpu-vs-libtorch.md" 2>&1; cat "$OUT/wgpu-vs-libtorch.md"
  fi
  # $DEV/photos: 256 of the 256-px photos, carried by this call (the training data is not). The
  # device thread batches what the -j workers have decoded; the debug log shows the batch sizes.
  for precision in f32 f16; do
    rm -rf /tmp/hvq-tokens
    START=$(date +%s.%N)
    RUST_LOG=hvq::tokenize_dir=debug timeout 45 "$bins/hvq" --backend wgpu --precision $precision tokenize-dir -j 64 \
      --shard-size 32 --output /tmp/hvq-tokens "$DEV/photos" > "$OUT/wgpu-tokenize-dir-$precision.txt" 2>&1
    local rc=$? secs; secs=$(awk -v a="$START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    # Images in finished shards of 32 (a shard appears only when complete, so a cut run still counts).
    local n; n=$(cat /tmp/hvq-tokens/shard-*/index.jsonl 2> /dev/null | wc -l)
    echo "tokenize-dir --backend wgpu --precision $precision -j 64: exit $rc, $n images in $secs s ($(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.1f", n / s }') images/s, model load included)"
    grep -c "device batch" "$OUT/wgpu-tokenize-dir-$precision.txt" | sed 's/^/device batches: /'
    grep -v "device batch" "$OUT/wgpu-tokenize-dir-$precision.txt" | tail -3
  done
}
[ -f "$DEV/wgpu.tar.xz" ] && wgpu_on_vulkan
# `gpu-run.sh wgpu`: only step 5. What travels to the GPU machine (the tracked tree, about 22 MiB,
# plus `carry`) is limited to 64 MiB: steps 1-4 need 63 MiB in all (carry [".device/configs",
# ".device/data", ".device/hvq-train.xz", ".device/hvq-train-before.xz", ".device/lpips"]), step 5 51 MiB (carry [".device/gl",
# ".device/wgpu.tar.xz", ".device/photos", ".device/hvq-train.xz"]), so they are two calls; gpu-prepare.sh prints both sizes.
if [ "$MODE" = wgpu ]; then ls -la "$OUT"; exit 0; fi

# 1. Training-step speed before and after issue 10's step changes, same card, same run: the
#    trainer of commit bc1de38 ($DEV/hvq-train-before.xz, its bench: batch 16, f32) against this
#    one at batch 32 in f32 and in bf16, with achieved TFLOP/s and the fraction of peak (JSON).
if [ "$DEVICE" = cuda ]; then
  if [ -f "$DEV/hvq-train-before.xz" ]; then
    xz -dc "$DEV/hvq-train-before.xz" > /tmp/hvq-train-before && chmod +x /tmp/hvq-train-before
    timeout 60 /tmp/hvq-train-before bench --device cuda --presets small --presets paper --batch 16 --reps 5 \
      > "$OUT/bench-before.md" 2> "$OUT/bench-before.jsonl"
    echo "bench before: exit $?"; cat "$OUT/bench-before.md"
  fi
  for precision in f32 bf16; do
    timeout 60 "$BIN" bench --device cuda --presets small,paper --batch 32 --size 256 --reps 5 \
      --precision "$precision" --json "$OUT/bench-after-$precision.json" > "$OUT/bench-after-$precision.md" 2>&1
    echo "bench after ($precision): exit $?"; cat "$OUT/bench-after-$precision.md"
  done
else
  # The dry run checks the invocation at toy size.
  timeout 300 "$BIN" bench --device cpu --presets tiny --batch 2 --size 32 --reps 1 --precision bf16 \
    --json "$OUT/bench-after-bf16.json" > "$OUT/bench-after-bf16.md" 2>&1
  echo "bench (dry run): exit $?"; cat "$OUT/bench-after-bf16.md"
fi

# 1c. The NCCL path at world size 1 (issue 10): 10 steps of the tiny preset whose gradients go
#     through ncclAllReduce (HVQ_NCCL=1). In the dry run the trainer refuses it on the CPU.
{ echo 'preset = "tiny"'
  sed -n 's/^data_dir *= *\(".*"\)/data_dir = \1/p' "$CFG"
  echo "out_dir = \"$OUT/nccl-run\""
  printf '[data]\nimage_size = 64\nworkers = 4\n[schedule]\nsteps = 10\nbatch = 8\nwarmup_steps = 2\n[loss]\nperceptual = 0.0\n'
} > "$OUT/nccl.toml"
HVQ_NCCL=1 timeout 45 "$BIN" train --config "$OUT/nccl.toml" --device "$DEVICE" > "$OUT/nccl-world1.log" 2>&1
echo "NCCL world size 1: exit $?"; tail -c 600 "$OUT/nccl-world1.log"

# 1b. The input pipeline per core on this machine's CPUs (a few seconds), beside the step time.
DATA="$(sed -n 's/^data_dir *= *"\(.*\)"/\1/p' "$CFG")"
timeout 15 "$BIN" bench-data --data "$DATA" --json \
  > "$OUT/bench-data.json" 2>&1; cat "$OUT/bench-data.json"

# 2. Train for about BUDGET seconds. A warm start gets a horizon that fits the budget (80 % of it at
#    the bf16 bench's step time; the rest is start-up and validation), so its learning rate has
#    decayed when it stops. SIGINT makes the trainer write a checkpoint before it stops either way.
HORIZON=()
if [ "$DEVICE" = cuda ] && grep -q '^from = ' "$CFG"; then
  MS=$(python3 -c 'import json,sys; print(next(s["ms"] for s in json.load(open(sys.argv[1]))["steps"] if s["preset"] == "small"))' \
    "$OUT/bench-after-bf16.json" 2> /dev/null)
  [ -n "$MS" ] && HORIZON=(--steps "$(awk -v b="$BUDGET" -v ms="$MS" 'BEGIN { n = int(0.8 * b * 1000 / ms); print (n < 50 ? 50 : n) }')")
  echo "bf16 step ${MS:-unmeasured} ms: training horizon ${HORIZON[*]:-from the config}"
fi
START=$(date +%s)
timeout -s INT "$BUDGET" "$BIN" train --config "$CFG" --device "$DEVICE" "${HORIZON[@]}" > "$OUT/train.log" 2>&1
echo "train exit $? after $(( $(date +%s) - START )) s"; tail -c 1500 "$OUT/train.log"
cp "$RUN/log.jsonl" "$OUT/train-log.jsonl" 2>/dev/null

# 3. Export and evaluate: sharing on all 1000 photos, quality on the 50 held-out ones.
"$BIN" export --checkpoint "$RUN" --out "$OUT/next-default.safetensors" --f16 2>&1 | tail -2
timeout 90 "$BIN" eval --weights "$OUT/next-default.safetensors" --data "$DATA" --center-crop 256 \
  "${EVAL_LIMIT[@]}" --lpips "$DEV/lpips/alexnet-int8.safetensors" --device "$DEVICE" \
  --out "$OUT/eval-all-crops" 2>&1 | tail -12
timeout 60 "$BIN" eval --weights "$OUT/next-default.safetensors" --data "$DATA" --held-out --center-crop 256 \
  "${EVAL_LIMIT[@]}" --lpips "$DEV/lpips/alexnet-int8.safetensors" \
  --lpips-vgg "$DEV/lpips/vgg16-int8.safetensors" --device "$DEVICE" \
  --out "$OUT/eval-heldout" 2>&1 | tail -12
# The embedded model, same photos, LPIPS and run: the bar a replacement must clear at every level.
timeout 40 "$BIN" eval --weights codec/models/default.safetensors --data "$DATA" --held-out --center-crop 256 \
  "${EVAL_LIMIT[@]}" --lpips "$DEV/lpips/alexnet-int8.safetensors" \
  --lpips-vgg "$DEV/lpips/vgg16-int8.safetensors" --device "$DEVICE" \
  --out "$OUT/eval-heldout-embedded" 2>&1 | tail -12
ls -la "$OUT"
