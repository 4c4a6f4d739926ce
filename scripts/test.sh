#!/usr/bin/env bash
# The test command: set up (idempotent), then the Rust core's tests, then pytest.
# pytest runs with warnings as errors (pyproject.toml); "no tests ran" (exit 5) fails too.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${R1OMNI_CACHE:-$HOME/.cache/r1omni-fast}
bash "$ROOT/scripts/setup.sh"
export CARGO_TARGET_DIR="$CACHE/target"
cd "$ROOT"
echo "[test] cargo test (Rust core, no Python)"
cargo test --locked
echo "[test] pytest"
exec "$CACHE/venv/bin/python" -m pytest "$@"
