#!/usr/bin/env bash
# Browser end-to-end test of hvq: builds the wasm bindings, prepares a model and native reference
# outputs, then drives the demo page in headless Debian Chromium (WebGPU on SwiftShader) with
# node's test runner. Exits non-zero on any failure.
#
#   bash scripts/web-test.sh            # the test (part of the main test command)
#   HVQ_WEB_BENCH=1 bash scripts/web-test.sh   # also run web/bench.mjs afterwards
#
# Environment:
#   HVQ_WEB_PRESET  preset of the random test weights (default: tiny)
#   HVQ_WEB_MODEL   `default` to test the trained default model instead of random weights
#   HVQ_WEB_SIZE    side of the generated test image (default 64)
#   HVQ_KODAK_DIR   folder of Kodak PNGs for the real-photo case (default: ../shared/data/kodak)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/env.sh

PRESET="${HVQ_WEB_PRESET:-tiny}"
OUT="$ROOT/target/web-test"
mkdir -p "$OUT"

say() { echo "web-test: $*"; }

# --- tools ---------------------------------------------------------------------------------------
command -v node >/dev/null || { echo "web-test: node is missing (apt-get install nodejs)"; exit 1; }
[ -x /usr/bin/chromium ] || { echo "web-test: /usr/bin/chromium is missing (scripts/setup.sh installs it)"; exit 1; }
WB_VERSION="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p' | head -1)"
if ! wasm-bindgen --version 2>/dev/null | grep -q "$WB_VERSION"; then
  echo "web-test: wasm-bindgen CLI $WB_VERSION is needed (cargo install wasm-bindgen-cli --version $WB_VERSION)"; exit 1
fi
if [ ! -d web/node_modules/playwright-core ]; then
  say "installing npm packages (playwright-core only; no browser download)"
  (cd web && (npm ci --no-audit --no-fund || npm install --no-audit --no-fund))
fi

# --- build ---------------------------------------------------------------------------------------
say "building hvq-wasm for wasm32 and the native hvq CLI"
cargo build -q -p hvq-wasm --target wasm32-unknown-unknown --release
wasm-bindgen --target web --out-dir web/pkg target/wasm32-unknown-unknown/release/hvq_wasm.wasm
# The native CLI and the random-weights helper in the test profile, with the workspace's test
# features: right after `cargo test --workspace` (scripts/test.sh) every unit is fresh, so this
# builds nothing, where a release build would compile the whole native dependency tree again.
cargo test -q --workspace --no-run --test cli --example test_weights
HVQ="$ROOT/target/debug/hvq"
TEST_WEIGHTS="$ROOT/target/debug/examples/test_weights"

# --- model ---------------------------------------------------------------------------------------
# The test runs on web/test-model.safetensors: random `tiny` weights by default, because SwiftShader
# (WebGPU on the CPU) compiles and runs the `small` model too slowly for a 2-core test machine.
# HVQ_WEB_MODEL=default tests the trained default model instead (when it exists).
if [ "${HVQ_WEB_MODEL:-random}" = default ] && [ -f codec/models/default.safetensors ]; then
  say "test model: the project's default model (codec/models/default.safetensors)"
  cp codec/models/default.safetensors web/test-model.safetensors
else
  say "test model: random '$PRESET' weights (seed 1)"
  "$TEST_WEIGHTS" "$PRESET" 1 web/test-model.safetensors
fi
# The demo page's own model (scripts/serve.sh): the trained default when there is one.
if [ -f codec/models/default.safetensors ]; then
  cp codec/models/default.safetensors web/model.safetensors
elif [ ! -f web/model.safetensors ]; then
  cp web/test-model.safetensors web/model.safetensors
fi
# Another model (random tiny weights) for the "file for another model" case.
"$TEST_WEIGHTS" tiny 2 "$OUT/other.safetensors"

# --- test images and native references -----------------------------------------------------------
node web/tools/make-sample.mjs "$OUT/sample-256.png" 256 >/dev/null
cmp -s "$OUT/sample-256.png" web/sample.png || { say "web/sample.png differs from web/tools/make-sample.mjs output"; exit 1; }
# Test images are small: SwiftShader runs WebGPU on the CPU, and a 256×256 image through the tiny
# model's mid attention (a 128×128 grid) takes minutes there. HVQ_WEB_SIZE sets the sample's side.
node web/tools/make-sample.mjs "$OUT/sample.png" "${HVQ_WEB_SIZE:-64}" >/dev/null
KODAK="${HVQ_KODAK_DIR:-$ROOT/../shared/data/kodak}"
IMAGES=(sample)
if [ -f "$KODAK/kodim23.png" ]; then
  # The whole photo, shrunk 8× (768×512 → 96×64; not a multiple of every stride).
  node web/tools/crop-png.mjs "$KODAK/kodim23.png" "$OUT/kodim23.png" 0 0 768 512 8
  IMAGES+=(kodim23)
else
  say "WARNING: $KODAK/kodim23.png not found: the real-photo (Kodak) case will be SKIPPED"
fi
M=(-m web/test-model.safetensors --backend cpu)
for img in "${IMAGES[@]}"; do
  "$HVQ" tokens "$OUT/$img.png" --format json "${M[@]}" -o "$OUT/$img.tokens.json"
  "$HVQ" encode "$OUT/$img.png" -o "$OUT/$img.hvq" "${M[@]}"
  levels="$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).levels.map(l=>l.level).join(" "))' "$OUT/$img.tokens.json")"
  for l in $levels; do
    "$HVQ" decode "$OUT/$img.hvq" -o "$OUT/$img.level$l.png" --level "$l" "${M[@]}"
  done
done
"$HVQ" encode "$OUT/sample.png" -o "$OUT/other-model.hvq" -m "$OUT/other.safetensors" --backend cpu
# Rate–distortion encoding: the page's "File size" menu must reach the codec (e2e.test.mjs).
"$HVQ" encode "$OUT/sample.png" -o "$OUT/sample-rd.hvq" --rd-lambda 0.3 "${M[@]}"
say "native references ready in $OUT"

# --- the browser test ----------------------------------------------------------------------------
export HVQ_WEB_TEST_DIR="$OUT"
status=0
(cd web && node --test --test-reporter=spec e2e.test.mjs) || status=$?
if [ "${HVQ_WEB_BENCH:-0}" = 1 ] && [ $status = 0 ]; then
  (cd web && node bench.mjs) || status=$?
fi
exit $status
