#!/usr/bin/env bash
# Idempotently installs what a fresh machine of the project's kind lacks.
# Safe to run again: every step checks first. Used by scripts/test.sh and .ci/run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_VERSION=2.11.0
WASM_BINDGEN_VERSION=0.2.130

need_apt=()
for pkg in g++ python3-venv mesa-vulkan-drivers libvulkan1 chromium fonts-dejavu-core; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Project-local venv holding only the CPU parts of the pip libtorch (DESIGN.md §3).
# The venv's Python version is whatever python3 this machine has (the wheel exists for 3.10–3.13).
if ! compgen -G ".venv/lib/python3*/site-packages/torch/lib/libtorch_cpu.so" >/dev/null; then
  echo "setup: installing pip torch==$TORCH_VERSION (CPU libraries) into .venv"
  /usr/bin/python3 -m venv .venv
  .venv/bin/pip install -q --no-deps "torch==$TORCH_VERSION" \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
fi

rustup target list --installed | grep -q wasm32-unknown-unknown \
  || rustup target add wasm32-unknown-unknown

if ! command -v wasm-bindgen >/dev/null || ! wasm-bindgen --version | grep -q "$WASM_BINDGEN_VERSION"; then
  # Unoptimised: it compiles in about 2 minutes instead of 6 on a 2-core machine, and processes
  # hvq-wasm in 3 s instead of 0.6 s, with byte-identical output (checked 2026-12-02).
  echo "setup: installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (takes a few minutes)"
  cargo install -q --debug wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

if [ -f web/package.json ] && [ ! -d web/node_modules/playwright-core ]; then
  echo "setup: installing npm packages for web/"
  (cd web && npm ci --no-audit --no-fund 2>/dev/null || npm install --no-audit --no-fund)
fi
echo "setup: done"
