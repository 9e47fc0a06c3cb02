#!/usr/bin/env bash
# Prepares .device/ (git-ignored, carried to a lent GPU machine; at most 64 MiB) for
# scripts/gpu-run.sh: the stripped release hvq-train built here against pip torch 2.11.0, a
# 256-px-short-side copy of ../shared/data/imagenet-sample (same file names, so the same held-out
# split), LPIPS-VGG16 and -Alex in f16, and the run configs. Then, from the device tool:
#   run(command="bash scripts/gpu-run.sh 330", carry=[".device"], timeout_s=600)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/env.sh
cargo build --release -p hvq-train
mkdir -p .device/lpips .device/configs
cp target/release/hvq-train .device/hvq-train && strip .device/hvq-train
[ -d .device/data/imagenet-256 ] || target/release/hvq-train shrink-data \
  --src ../shared/data/imagenet-sample --dst .device/data/imagenet-256 --short-side 256 --quality 80
for net in vgg16 alexnet; do
  [ -f ".device/lpips/$net-f16.safetensors" ] || target/release/hvq-train half \
    --src "../shared/data/lpips/$net.safetensors" --dst ".device/lpips/$net-f16.safetensors"
done
cp train/configs/default-model-shared.toml .device/configs/
du -sh .device; du -sh .device/*
