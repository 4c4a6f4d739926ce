#!/usr/bin/env bash
# The test command: set up (idempotent), then the Rust core's tests, the lint steps (ruff,
# import-linter), the documentation build (mkdocs --strict), then pytest.
# pytest runs with warnings as errors (pyproject.toml); "no tests ran" (exit 5) fails too.
# Any failure prints one line naming the step that failed.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${R1OMNI_CACHE:-$HOME/.cache/r1omni-fast}
STEP="set-up (scripts/setup.sh)"
trap 'rc=$?; echo "[test] failed (exit $rc) in step: $STEP" >&2; exit $rc' ERR
bash "$ROOT/scripts/setup.sh" --with-test-tools
export CARGO_TARGET_DIR="$CACHE/target"
cd "$ROOT"
STEP="cargo test (Rust core)"
echo "[test] cargo test (Rust core, no Python)"
cargo test --locked
STEP="ruff (lint: pyflakes and syntax, pyproject.toml [tool.ruff])"
echo "[test] ruff check"
"$CACHE/venv/bin/ruff" check --quiet python tests bench scripts
STEP="import-linter (the layers, pyproject.toml [tool.importlinter])"
echo "[test] lint-imports"
(cd "$ROOT/python" && "$CACHE/venv/bin/lint-imports" --no-cache "$ROOT/pyproject.toml" >/dev/null) || {
  (cd "$ROOT/python" && "$CACHE/venv/bin/lint-imports" --no-cache "$ROOT/pyproject.toml" | tail -40) >&2; false; }
STEP="mkdocs build --strict (the documentation site, mkdocs.yml; a broken link fails)"
echo "[test] mkdocs build --strict"
NO_MKDOCS_2_WARNING=1 "$CACHE/venv/bin/mkdocs" build --strict --site-dir "$CACHE/site" > "$CACHE/mkdocs.log" 2>&1 || {
  grep -E "WARNING|ERROR|Aborted" "$CACHE/mkdocs.log" >&2; false; }
STEP="pytest"
args=()
for arg in "$@"; do  # --quick: leave out the minute-plus tests (marked slow)
  if [[ $arg == --quick ]]; then args+=(-m "not slow"); else args+=("$arg"); fi
done
echo "[test] pytest"
"$CACHE/venv/bin/python" -m pytest "${args[@]}"
