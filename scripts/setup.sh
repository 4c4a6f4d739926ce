#!/usr/bin/env bash
# One-time (and idempotent) set-up of everything r1omni-fast needs on a Debian machine:
#   1. system packages (FFmpeg -dev libraries, pkg-config, libclang, a C toolchain) via apt-get;
#   2. a Python virtual environment OUTSIDE the clone, in a cache folder keyed by a hash of the
#      dependency specification, so an unchanged dependency list is never installed twice;
#      environments of older dependency lists are pruned: the newest other one is kept (a quick
#      way back), every older one is removed (~5 GB each);
#   3. the native extension, built in release mode and installed into that environment.
# A second run with nothing changed takes seconds. Without root or apt-get it prints exactly
# what must be installed by hand and stops. Any failure prints one line naming the step.
#
# Usage: bash scripts/setup.sh [--with-test-tools]
# Environment:
#   R1OMNI_CACHE            cache folder (default ~/.cache/r1omni-fast)
#   PYTHON                  interpreter for the environment (default python3)
#   R1OMNI_SETUP_INSTALL    command run instead of pip for step 2, with the requirements file as
#                           its argument (tests set it to skip the torch download)
#   R1OMNI_SETUP_BUILD      command run instead of `maturin develop --release` for step 3
#                           (tests set it to skip the Rust build)
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${R1OMNI_CACHE:-$HOME/.cache/r1omni-fast}
PYTHON=${PYTHON:-python3}
APT_PACKAGES=(pkg-config clang libclang-dev build-essential ffmpeg
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev patchelf)
# --with-test-tools (scripts/test.sh passes it): what only the tests need
TEST_PACKAGES=(chromium chromium-driver)  # the headless browser of the report.html tests, and its WebDriver
for arg in "$@"; do
  case $arg in
    --with-test-tools) APT_PACKAGES+=("${TEST_PACKAGES[@]}") ;;
    *) printf '[setup] unknown argument %q (usage: bash scripts/setup.sh [--with-test-tools])\n' "$arg" >&2; exit 2 ;;
  esac
done

say() { printf '[setup] %s\n' "$*" >&2; }
STEP="start"
trap 'rc=$?; say "failed (exit $rc) in step: $STEP (scripts/setup.sh line $LINENO)"; exit $rc' ERR

# --- 1. system packages -------------------------------------------------------------
STEP="1/3 system packages"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == *"install ok installed"* ]] || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing system packages: ${missing[*]}"
    say "install them with:  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
fi
if ! command -v cargo >/dev/null; then
  say "cargo (Rust >= 1.75) is required to build the native extension: install it with rustup"
  exit 1
fi
if ! command -v "$PYTHON" >/dev/null; then
  say "$PYTHON not found: set PYTHON to a CPython >= 3.10 interpreter"
  exit 1
fi

# --- 2. the virtual environment -------------------------------------------------------
STEP="2/3 Python environment"
# The key covers the interpreter version and every dependency line of pyproject.toml.
spec=$("$PYTHON" - "$ROOT/pyproject.toml" <<'PY'
import sys, json, platform
try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
deps = list(project["dependencies"])
for extra in ("test", "bench", "docs"):
    deps += project.get("optional-dependencies", {}).get(extra, [])
deps.append("maturin>=1.7,<2")
print(json.dumps({"python": platform.python_version(), "deps": deps}))
PY
)
key=$(printf '%s' "$spec" | sha256sum | cut -c1-16)
VENV="$CACHE/venv-$key"
if [[ ! -f "$VENV/.complete" ]]; then
  say "creating $VENV (first run downloads torch: several minutes)"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  "$PYTHON" -m venv "$VENV"
  "$PYTHON" -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])["deps"]))' "$spec" > "$VENV/requirements.txt"
  if [[ -n ${R1OMNI_SETUP_INSTALL:-} ]]; then
    say "installing with R1OMNI_SETUP_INSTALL: $R1OMNI_SETUP_INSTALL"
    $R1OMNI_SETUP_INSTALL "$VENV/requirements.txt"
  else
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r "$VENV/requirements.txt"
  fi
  touch "$VENV/.complete"
else
  say "reusing $VENV"
fi
if [[ -d $CACHE/venv && ! -L $CACHE/venv ]]; then
  say "$CACHE/venv is a folder, not the link this script maintains: move it away and run again"
  exit 1
fi
ln -sfn "$VENV" "$CACHE/venv"
# Environments of older dependency lists, newest first: keep the first, remove the rest.
others=()
while IFS= read -r -d '' dir; do
  [[ $dir == "$VENV" ]] || others+=("$dir")
done < <(find "$CACHE" -mindepth 1 -maxdepth 1 -type d -name 'venv-*' -printf '%T@ %p\0' \
           | sort -z -r -n | sed -z 's/^[^ ]* //')
for old in "${others[@]:1}"; do
  say "removing stale environment $old"
  rm -rf "$old"
done

# --- 3. the native extension ------------------------------------------------------------
STEP="3/3 native extension"
export CARGO_TARGET_DIR="$CACHE/target"
cd "$ROOT"
say "building the native extension (release)"
log="$CACHE/build.log"
build=("$VENV/bin/maturin" develop --release)
if [[ -n ${R1OMNI_SETUP_BUILD:-} ]]; then
  say "building with R1OMNI_SETUP_BUILD: $R1OMNI_SETUP_BUILD"
  read -r -a build <<<"$R1OMNI_SETUP_BUILD"
fi
if ! VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" "${build[@]}" >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  say "building the native extension failed (full log: $log)"
  exit 1
fi
trap - ERR
say "ready: $CACHE/venv/bin/r1omni-fast"
