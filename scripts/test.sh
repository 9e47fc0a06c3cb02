#!/usr/bin/env bash
# The one test command: installs what a fresh machine lacks, then runs every test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
. scripts/env.sh
cargo test --workspace --no-fail-fast -j 2
