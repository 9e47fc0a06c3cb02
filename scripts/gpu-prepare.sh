#!/usr/bin/env bash
# Prepares .device/ (git-ignored, carried to a lent GPU machine; at most 64 MiB) for
# scripts/gpu-run.sh: the stripped, xz-packed release hvq-train built here against pip torch 2.11.0,
# a 256-px-short-side copy of ../shared/data/imagenet-sample (same file names, so the same held-out
# split), LPIPS-VGG16 and -Alex with int8 convolutions (`hvq-train half --int8`: a quarter of f32,
# LPIPS-VGG distances within 0.5 % or 1e-4), and the run configs. Then, from the device tool, two calls:
#   run(command="bash scripts/gpu-run.sh wgpu", carry=[".device/gl", ".device/wgpu.tar.xz", ".device/photos", ".device/hvq-train.xz"], timeout_s=600)
#   run(command="bash scripts/gpu-run.sh 190", carry=[".device/configs", ".device/data",
#       ".device/hvq-train.xz", ".device/hvq-train-before.xz", ".device/lpips"], timeout_s=600)
# `bash scripts/gpu-prepare.sh wgpu` prepares only what the first call carries (no trainer of
# bc1de38, no LPIPS): enough for `HVQ_GPU_DRY_RUN=1 bash scripts/gpu-run.sh wgpu`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/env.sh
cargo build --release -p hvq-train
mkdir -p .device/lpips .device/configs
rm -f .device/hvq-train .device/lpips/*-f16.safetensors # the layout before 2026-12-02
strip -o /tmp/hvq-train target/release/hvq-train && xz -T2 -c /tmp/hvq-train > .device/hvq-train.xz
ONLY="${1:-all}"
# The trainer before issue 10's step changes (commit bc1de38), for gpu-run.sh's before/after bench.
if [ "$ONLY" != wgpu ] && [ ! -f .device/hvq-train-before.xz ]; then
  before=/tmp/hvq-before-bc1de38
  [ -d "$before" ] || git worktree add --detach "$before" bc1de38
  (cd "$before" && CARGO_TARGET_DIR="$ROOT/target/before" cargo build --release -p hvq-train)
  strip -o /tmp/hvq-train-before target/before/release/hvq-train
  xz -T2 -c /tmp/hvq-train-before > .device/hvq-train-before.xz
fi
[ -d .device/data/imagenet-256 ] || target/release/hvq-train shrink-data \
  --src ../shared/data/imagenet-sample --dst .device/data/imagenet-256 --short-side 256 --quality 80
for net in vgg16 alexnet; do
  [ "$ONLY" = wgpu ] && break
  [ -f ".device/lpips/$net-int8.safetensors" ] || target/release/hvq-train half --int8 \
    --src "../shared/data/lpips/$net.safetensors" --dst ".device/lpips/$net-int8.safetensors"
done
cp train/configs/default-model-warm.toml train/configs/default-model-shared.toml .device/configs/
# The wgpu call's `tokenize-dir` photos: the first 256 of the 256-px copy (the training data does not
# travel with that call).
rm -rf .device/photos && mkdir -p .device/photos
find .device/data/imagenet-256 -type f | sort | sed -n 1,256p | xargs -I{} cp {} .device/photos/ # sed, not head: no SIGPIPE under pipefail

# wgpu on the card's own Vulkan driver (issue 12): the Vulkan loader as a .deb (the GPU machine has
# the NVIDIA ICD but maybe no loader), the stripped release wgpu test binaries and bench, and hvq.
mkdir -p .device/gl /tmp/hvq-wgpu-bins
if ! ls .device/gl/libvulkan1_*.deb > /dev/null 2>&1; then
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  # shellcheck disable=SC2086 # $o holds several options
  apt-get $o update -qq && (cd .device/gl && apt-get $o download libvulkan1)
fi
# The executables cargo builds for the wgpu tests and bench, by target name.
executables() {
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}
{ cargo test --release -p hvq-wgpu --no-run --message-format=json
  cargo bench -p hvq-wgpu --bench wgpu --no-run --message-format=json; } 2> /dev/null | executables |
  while read -r name exe; do
    case "$name" in conformance|kernels|model|cross_check|wgpu) cp "$exe" "/tmp/hvq-wgpu-bins/$name" && strip "/tmp/hvq-wgpu-bins/$name";; esac
  done
cargo build --release -p hvq-cli && cp target/release/hvq /tmp/hvq-wgpu-bins/hvq && strip /tmp/hvq-wgpu-bins/hvq
# Compressed: the carry is 64 MiB and the data and LPIPS weights take most of it.
tar -C /tmp/hvq-wgpu-bins -cJf .device/wgpu.tar.xz .
du -sh .device; du -sh .device/*

# What each device call would send: the tracked tree plus its carry, against the 64 MiB limit.
tree=$(git ls-files -z | xargs -0 du -cb 2> /dev/null | tail -1 | cut -f1)
calls=(".device/gl .device/wgpu.tar.xz .device/photos .device/hvq-train.xz"
       ".device/configs .device/data .device/hvq-train.xz .device/hvq-train-before.xz .device/lpips")
[ "$ONLY" = wgpu ] && calls=("${calls[0]}")
for call in "${calls[@]}"; do
  # shellcheck disable=SC2086 # $call holds several paths
  size=$(( tree + $(du -cb $call | tail -1 | cut -f1) ))
  echo "travel size with carry [$call]: $(( size >> 20 )) MiB (limit 64)"
done
