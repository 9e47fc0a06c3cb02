# Source this to build and run the libtorch-based trainer:  . scripts/env.sh
# LIBTORCH points at the project-local pip torch installed by scripts/setup.sh.
HVQ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Whatever Python version made the venv (python3.X), not one hard-coded version.
if [ -z "${LIBTORCH:-}" ]; then
  for _torch in "$HVQ_ROOT"/.venv/lib/python3*/site-packages/torch; do LIBTORCH="$_torch"; done
  unset _torch
fi
export LIBTORCH
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/hvq-xdg}"
{ mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"; } 2>/dev/null || true
