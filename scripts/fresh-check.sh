#!/usr/bin/env bash
# A fresh-machine rehearsal: the README's two commands, exactly as written, in a fresh clone of
# this repository's committed HEAD with an empty home cache, and the wall time of each.
#
#   bash scripts/fresh-check.sh [DEMO FLAGS...]     (default: --sft-steps 30 --grpo-steps 5)
#   bash scripts/fresh-check.sh --full              (the demo as the README runs it)
#
# HOME points at an empty temporary folder, so `~/.cache/r1omni-fast` (and pip's download cache)
# start empty, as on a new machine; the Rust toolchain (CARGO_HOME, RUSTUP_HOME) and pyenv
# (PYENV_ROOT) are kept where they are installed. System packages are what the machine has: run
# it on a machine without them to rehearse their installation too. Everything it made is removed
# at the end unless KEEP=1. Takes about as long as a first set-up plus the test suite.
set -Eeuo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STEP="start"
trap 'rc=$?; echo "[fresh-check] failed (exit $rc) in step: $STEP" >&2; exit $rc' ERR

demo_flags=(--sft-steps 30 --grpo-steps 5)
if [[ ${1:-} == --full ]]; then demo_flags=(); elif (($# > 0)); then demo_flags=("$@"); fi

work=$(mktemp -d /tmp/r1omni-fresh-XXXXXX)
if [[ ${KEEP:-0} != 1 ]]; then trap 'rm -rf "$work"' EXIT; fi
export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo} RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
if [[ -d ${PYENV_ROOT:-$HOME/.pyenv} ]]; then export PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}; fi
export HOME="$work/home"
unset R1OMNI_CACHE VIRTUAL_ENV PYTHONPATH
mkdir -p "$HOME"

STEP="clone"
git clone -q "$SRC" "$work/r1omni-fast"
cd "$work/r1omni-fast"
echo "[fresh-check] clone of $(git rev-parse --short HEAD) in $PWD; HOME=$HOME (empty)"

STEP="README command 1: set-up and demo"
echo "[fresh-check] 1. bash scripts/setup.sh && ~/.cache/r1omni-fast/venv/bin/r1omni-fast demo ${demo_flags[*]}"
t0=$(date +%s)
bash scripts/setup.sh && ~/.cache/r1omni-fast/venv/bin/r1omni-fast demo "${demo_flags[@]}"
t1=$(date +%s)

STEP="README command 2: tests"
echo "[fresh-check] 2. bash scripts/test.sh"
bash scripts/test.sh
t2=$(date +%s)

# The demo alone, now that everything is installed: the time a returning user sees.
STEP="demo again (set-up cached)"
ts=$(date +%s)
bash scripts/setup.sh
td=$(date +%s)
~/.cache/r1omni-fast/venv/bin/r1omni-fast demo --quiet --out "$work/demo-again" "${demo_flags[@]}" >/dev/null
t3=$(date +%s)
trap - ERR
printf '[fresh-check] wall time, %s logical CPUs:\n' "$(nproc)"
printf '  1. set-up + demo %-28s %5d s\n' "${demo_flags[*]:-(full)}" $((t1 - t0))
printf '  2. test command                              %5d s\n' $((t2 - t1))
printf '  set-up again (nothing to do)                 %5d s\n' $((td - ts))
printf '  demo alone %-33s %5d s\n' "${demo_flags[*]:-(full)}" $((t3 - td))
