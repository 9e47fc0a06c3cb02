#!/usr/bin/env bash
# Serves the browser demo on http://127.0.0.1:${PORT:-8080}/ (localhost only).
#
#   bash scripts/serve.sh            # builds web/pkg if missing, then serves web/
#   bash scripts/serve.sh --build    # rebuild the wasm bindings first
#
# The page loads its model from web/model.safetensors: the project's default model is copied there
# when it exists; otherwise pass any weight file with MODEL=path/to/weights.safetensors.
# WebGPU in Chromium on Linux may need chrome://flags/#enable-unsafe-webgpu; without it the page
# says so and runs on the CPU backend.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ "${1:-}" = "--build" ] || [ ! -f web/pkg/hvq_wasm_bg.wasm ]; then
  echo "serve: building the wasm bindings into web/pkg"
  cargo build -q -p hvq-wasm --target wasm32-unknown-unknown --release
  wasm-bindgen --target web --out-dir web/pkg target/wasm32-unknown-unknown/release/hvq_wasm.wasm
fi
if [ -n "${MODEL:-}" ]; then
  cp "$MODEL" web/model.safetensors
elif [ -f codec/models/default.safetensors ] && [ ! -f web/model.safetensors ]; then
  cp codec/models/default.safetensors web/model.safetensors
fi
[ -f web/model.safetensors ] || echo "serve: WARNING: no web/model.safetensors; set MODEL=... (see scripts/web-test.sh)"
exec node web/server.mjs --port "${PORT:-8080}" --root web
