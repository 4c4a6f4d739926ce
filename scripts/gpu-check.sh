#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run that fits in 8 minutes on one H200:
#   1. pytest -m gpu          the GPU tests (kernels, captured decode; predict in bf16 where PyAV is)
#   2. bench/loss.py          fused GRPO loss vs eager PyTorch and Liger-Kernel (time, memory)
#   3. bench/grpo_step.py     one GRPO step of the tiny model on CUDA in bf16, phase by phase
#   4. bench/generate.py      decode: transformers dynamic / static compiled cache vs this loop
#   5. one GRPO step of the tiny model through the CLI (r1omni-fast train ... --max-steps 1 --bf16)
#
# The GPU machine has torch, triton and transformers (5.17 when last seen: older than the 5.24
# that `generate` is tested with, whose decoders take `cache=`) but no FFmpeg (development files
# or libraries), no PyAV and no network, so what else the checks need travels with the tree in
# .gpu-check/ (git-ignored; copy it along), the two together under 64 MiB:
#   - the built wheel and the build machine's transformers version, installed there into one
#     folder and packed with xz: the wheel itself (FFmpeg and its codec libraries bundled) is about
#     68 MB, the xz'd folder about 54 MB;
#   - the liger-kernel wheel (pip download --no-deps), installed on the GPU machine with
#     pip --no-index;
#   - 8 synthetic clips for the CLI step (PyAV, which writes them, does not fit beside the rest;
#     without PyAV on the GPU machine, the predict GPU test, whose fixture writes clips, is left out).
#   bash scripts/gpu-check.sh --prepare    # on the build machine (R1OMNI_WHEEL=path: a built wheel)
#   bash scripts/gpu-check.sh              # on the GPU machine, .gpu-check beside it: sections 1-5
#   bash scripts/gpu-check.sh --dry-run    # anywhere: the same steps, CPU-sized, on the CPU
# Each section's output is printed as it runs (and copied to $OUT/gpu-check.log when $OUT is
# set), then a summary: each section's status and seconds, and every ratio line printed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREP="$ROOT/.gpu-check"
PY="${PYTHON:-python3}"
MODE=run
case "${1:-}" in
  --prepare) MODE=prepare ;;
  --dry-run) MODE=dry ;;
  "") ;;
  *) echo "usage: $0 [--prepare | --dry-run]" >&2; exit 2 ;;
esac

say() { echo "[gpu-check] $*"; }

if [ "$MODE" = prepare ]; then
  set -e
  # the project's environment (maturin, PyAV, transformers) unless PYTHON names another
  [ -z "${PYTHON:-}" ] && [ -x "$HOME/.cache/r1omni-fast/venv/bin/python" ] && PY="$HOME/.cache/r1omni-fast/venv/bin/python"
  LIGER_VERSION="$("$PY" -c 'import importlib.metadata as m; print(m.version("liger-kernel"))' 2>/dev/null || echo "")"
  TF_VERSION="$("$PY" -c 'import transformers; print(transformers.__version__)')"
  rm -rf "$PREP" && mkdir -p "$PREP/wheels"
  BUILD="$(mktemp -d /tmp/r1omni-gpu-prepare.XXXXXX)"
  trap 'rm -rf "$BUILD"' EXIT
  WHEEL="${R1OMNI_WHEEL:-}"
  if [ -z "$WHEEL" ]; then
    say "building the wheel (maturin, release; FFmpeg bundled)"
    # a target folder of its own: the wheel's repair step rewrites the library it builds
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/r1omni-fast/target-gpu-check}" \
      "$(dirname "$PY")/maturin" build --release -q -o "$BUILD/dist" --manifest-path "$ROOT/Cargo.toml"
    WHEEL="$(ls "$BUILD"/dist/r1omni_fast-*.whl)"
  fi
  say "installing $(basename "$WHEEL") and transformers==$TF_VERSION into a folder, packing it with xz (minutes)"
  "$PY" -m pip install -q --no-deps --no-compile --target "$BUILD/site" "$WHEEL" "transformers==$TF_VERSION"
  tar -cf - -C "$BUILD/site" . | xz -6 -T0 > "$PREP/r1omni_fast-site.tar.xz"
  say "downloading liger-kernel${LIGER_VERSION:+==$LIGER_VERSION}"
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$PREP/wheels" "liger-kernel${LIGER_VERSION:+==$LIGER_VERSION}"
  say "writing 8 synthetic clips for the CLI step"
  PYTHONPATH="$ROOT/python" "$PY" -m r1omni_fast data synth "$PREP/data" --n 8 --seed 0 >/dev/null
  ls -l "$PREP" "$PREP/wheels"
  du -sh "$PREP"
  say "ready: run 'bash scripts/gpu-check.sh' on the GPU machine with .gpu-check carried"
  exit 0
fi

WORK="$(mktemp -d /tmp/r1omni-gpu-check.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
LOG="$WORK/gpu-check.log"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then LOG="$OUT/gpu-check.log"; fi
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
say "mode $MODE; work folder $WORK"

# ---------------------------------------------------------------- install what travelled
if [ ! -f "$PREP/r1omni_fast-site.tar.xz" ]; then
  if [ "$MODE" = run ]; then say "no .gpu-check: run 'bash scripts/gpu-check.sh --prepare' first and carry .gpu-check"; exit 2; fi
  say "no .gpu-check (not prepared): the dry run uses the source tree and the installed packages"
  cp -r "$ROOT/python" "$WORK/python"
  SITE=
else
  mkdir -p "$WORK/site" "$WORK/python"
  xz -dc "$PREP/r1omni_fast-site.tar.xz" | tar -xf - -C "$WORK/site" || { say "unpacking the package failed"; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
    "$PREP"/wheels/*.whl || { say "installing the wheels failed"; exit 2; }
  # the installed package (native extension and bundled FFmpeg) stands in for python/
  cp -r "$WORK/site/r1omni_fast" "$WORK/python/"
  [ -d "$WORK/site/r1omni_fast.libs" ] && cp -r "$WORK/site/r1omni_fast.libs" "$WORK/python/"
  # the Python code under test is the tree's (the wheel may be older); the native part, the wheel's
  tar -C "$ROOT/python" --exclude='_native*.so' --exclude=__pycache__ -cf - r1omni_fast | tar -C "$WORK/python" -xf -
  SITE="$WORK/site"
fi
cp -r "$ROOT/tests" "$ROOT/bench" "$ROOT/configs" "$ROOT/pyproject.toml" "$WORK/"
export PYTHONPATH="$WORK/python${SITE:+:$SITE}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
cd "$WORK"

"$PY" - <<'EOF'
import importlib, torch, triton, transformers
print(f"python {__import__('sys').version.split()[0]}, torch {torch.__version__}, triton {triton.__version__}, "
      f"transformers {transformers.__version__}, CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
for name in ("r1omni_fast._native", "av", "liger_kernel"):
    try:
        m = importlib.import_module(name)
        print(f"  {name}: {getattr(m, '__file__', '?')}")
    except ImportError as exc:
        print(f"  {name}: NOT importable ({exc})")
EOF
HAS_CUDA="$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')"
if [ "$MODE" = run ] && [ "$HAS_CUDA" != 1 ]; then say "no CUDA device: use --dry-run on a machine without one"; exit 2; fi

# ---------------------------------------------------------------- sections
declare -a NAMES STATUS SECONDS_
section() {  # section NAME TIMEOUT_S COMMAND...
  local name="$1" limit="$2"; shift 2
  say "==== $name (limit ${limit}s): $*"
  local start=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@"; rc=$?
  local took=$((SECONDS - start)) status=ok
  [ $rc -ne 0 ] && status="failed (exit $rc)"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="timed out after ${limit}s"
  NAMES+=("$name"); STATUS+=("$status"); SECONDS_+=("$took")
  say "---- $name: $status in ${took}s"
}

GPU_TESTS=$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')
if ! "$PY" -c 'import av' 2>/dev/null; then
  say "no PyAV here: tests/test_predict.py (its fixture writes clips with PyAV) is left out"
  GPU_TESTS=${GPU_TESTS//tests\/test_predict.py/}
fi
if [ "$MODE" = run ]; then
  section "pytest -m gpu" 120 "$PY" -m pytest -m gpu -q -p no:cacheprovider $GPU_TESTS
  section "bench/loss.py" 50 "$PY" bench/loss.py --iters 5
  section "bench/grpo_step.py (CUDA, bf16)" 40 "$PY" bench/grpo_step.py --repeats 2
  section "bench/generate.py" 210 "$PY" bench/generate.py --repeats 1 --paths hf-dynamic,hf-static,eager,graph
  DTYPE_FLAG=--bf16
else  # the same steps, CPU-sized
  section "pytest -m gpu (skipped without CUDA: collection only)" 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider $GPU_TESTS
  section "bench/loss.py (CPU: agreement only)" 600 "$PY" bench/loss.py --iters 1
  section "bench/grpo_step.py (CPU, small)" 600 "$PY" bench/grpo_step.py --prompts 1 --generations 2 --tokens 4 --frames 2 --repeats 1
  section "bench/generate.py (CPU smoke)" 600 "$PY" bench/generate.py --model tiny --prompt-len 32 --new-tokens 8 --groups 2 --repeats 1
  DTYPE_FLAG=
fi
export PY WORK PREP
cli_step() {
  mkdir -p "$WORK/cli" &&
  "$PY" -m r1omni_fast model tiny "$WORK/cli/tiny" >/dev/null &&
  { if [ -d "$PREP/data" ]; then cp -r "$PREP/data" "$WORK/cli/data"
    else "$PY" -m r1omni_fast data synth "$WORK/cli/data" --n 8 --seed 0 >/dev/null; fi; } &&
  "$PY" -m r1omni_fast train --config configs/tiny-grpo.yaml --model-name-or-path "$WORK/cli/tiny" \
    --data-file "$WORK/cli/data/train.json" --eval-file "$WORK/cli/data/test.json" --output-dir "$WORK/cli/grpo" \
    --max-steps 1 --per-device-train-batch-size 2 --eval-max-new-tokens 8 --save-steps 1 $DTYPE_FLAG &&
  "$PY" - "$WORK/cli/grpo" <<'EOF'
import json, sys, pathlib
rows = [json.loads(line) for line in (pathlib.Path(sys.argv[1]) / "metrics.jsonl").read_text().splitlines() if line.strip()]
step = [r for r in rows if "loss" in r]
print("metrics of the step:", {k: step[-1][k] for k in ("step", "loss", "reward", "completions/mean_length") if k in step[-1]})
EOF
}
export DTYPE_FLAG
export -f cli_step
section "GRPO step through the CLI${DTYPE_FLAG:+ (CUDA, bf16)}" $([ "$MODE" = run ] && echo 40 || echo 600) bash -c cli_step

# ---------------------------------------------------------------- summary
say "==== summary"
for i in "${!NAMES[@]}"; do printf '  %-48s %-28s %4ss\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECONDS_[$i]}"; done
say "ratio lines printed above:"
grep -E '[0-9]x( |$)|x floor|vs hf' "$LOG" | grep -v '^\[gpu-check\]' | sed 's/^/  /'
[ "$LOG" = "$WORK/gpu-check.log" ] || say "log: $LOG"
failed=0
for s in "${STATUS[@]}"; do [ "$s" = ok ] || failed=1; done
exit $failed
