#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what a fresh machine lacks, then runs every test:
# the whole Rust workspace (trainer included, against the project-local pip libtorch; wgpu tests on
# Mesa lavapipe) and the browser end-to-end test in headless Chromium.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
. scripts/env.sh
# libtorch's worker threads busy-wait; on a 2-core machine running two test binaries at once they
# starve each other (17x slower measured). One intra-op thread per process keeps the suite fast.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# setup.sh installed Mesa lavapipe: a wgpu test that finds no adapter now fails instead of skipping.
export HVQ_REQUIRE_WGPU=1
status=0
cargo test --workspace --no-fail-fast -j 2 || status=1
# Benchmarks are not run here (timings are not tests), but they must keep compiling. Built in the
# test profile with the units above (`cargo check` would check every dependency once more).
cargo test -q --workspace --benches --no-run -j 2 || status=1
bash scripts/web-test.sh || status=1
if [ "$status" -ne 0 ]; then
  echo "scripts/test.sh: some tests FAILED (see above)"
fi
exit "$status"
