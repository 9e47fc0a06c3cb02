#!/usr/bin/env bash
# The main job: encode a photo with the embedded default model, then decode every level.
#   bash scripts/demo.sh PHOTO [OUT_DIR]
# Builds the `hvq` CLI in release mode on first use (no libtorch needed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IN="${1:?usage: scripts/demo.sh PHOTO [OUT_DIR]}"
OUT="${2:-out}"
mkdir -p "$OUT"
# The Vulkan loader (probed by `--backend auto`) wants a private runtime folder.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/hvq-xdg}"; mkdir -p "$XDG_RUNTIME_DIR"; chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
cargo build --release -q -p hvq-cli --bin hvq --manifest-path "$ROOT/Cargo.toml"
HVQ="$ROOT/target/release/hvq"
STEM="$(basename "${IN%.*}")"
"$HVQ" encode "$IN" -o "$OUT/$STEM.hvq"
"$HVQ" info "$OUT/$STEM.hvq"
for level in 2 1 0; do
  "$HVQ" decode "$OUT/$STEM.hvq" --level "$level" -o "$OUT/$STEM.level$level.png"
done
echo "wrote $OUT/$STEM.hvq and $OUT/$STEM.level{0,1,2}.png"
