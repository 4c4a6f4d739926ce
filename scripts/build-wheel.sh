#!/usr/bin/env bash
# Builds the wheel a package index can take: FFmpeg compiled from source as a static, PIC,
# decode-only LGPL library (no --enable-gpl, no --enable-nonfree; only the decoders, demuxers and
# parsers below, swscale and swresample; assembly on) and linked into r1omni_fast._native, so the
# wheel carries no other shared library; compiled and linked with zig against glibc 2.17, so it is
# tagged manylinux_2_17 (manylinux2014) and installs on any x86-64 Linux with glibc >= 2.17.
#
#   1. the system packages it needs (nasm, zlib1g-dev, dpkg-dev; apt-get as root, else named)
#      and a tools environment (maturin, ziglang, auditwheel, wheel), pinned, in the cache;
#   2. FFmpeg's source: Debian's source package of the FFmpeg the development set-up links
#      (the same version and patches, so both decode alike), fetched with a private apt state
#      that adds the deb-src entries (the system's apt configuration is not touched);
#   3. FFmpeg, configured as below and built once per configure line and version into
#      $R1OMNI_CACHE/ffmpeg-<version>-<hash of the configure line, the Debian version and zig>;
#   4. the wheel (maturin --zig, feature static-ffmpeg), then a licence notice (FFmpeg's licence,
#      version and configure line, and the LGPL text) added to its .dist-info/licenses/, and
#      `auditwheel show` on the result.
#
# Usage: bash scripts/build-wheel.sh [--out DIR]      (default DIR: dist/ in the clone)
# Environment:
#   R1OMNI_CACHE               cache folder (default ~/.cache/r1omni-fast)
#   PYTHON                     interpreter for the tools environment (default python3)
#   R1OMNI_WHEEL_TARGET        cargo's target folder (default $R1OMNI_CACHE/target-wheel; never
#                              the development build's, whose FFmpeg is the system's)
#   R1OMNI_FFMPEG_DEB_VERSION  the Debian source version of FFmpeg (default: the installed
#                              libavcodec-dev's, else the newest the distribution has)
#   JOBS                       parallel compile jobs for FFmpeg (default: nproc)
# The last line of stdout is the wheel's path. Any failure prints one line naming the step.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${R1OMNI_CACHE:-$HOME/.cache/r1omni-fast}
PYTHON=${PYTHON:-python3}
OUT=$ROOT/dist
JOBS=${JOBS:-$(nproc)}
while (($#)); do
  case $1 in
    --out) OUT=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
    *) printf '[wheel] unknown argument %q (usage: bash scripts/build-wheel.sh [--out DIR])\n' "$1" >&2; exit 2 ;;
  esac
done

say() { printf '[wheel] %s\n' "$*" >&2; }
STEP="start"
trap 'rc=$?; say "failed (exit $rc) in step: $STEP (scripts/build-wheel.sh line $LINENO)"; exit $rc' ERR

# The glibc the wheel is linked against and the tag that says so.
GLIBC=2.17
TAG=manylinux_2_17_x86_64
if [[ $(uname -m) != x86_64 ]]; then
  say "this script builds x86-64 wheels only (this machine is $(uname -m))"
  exit 1
fi

# --- 1. tools -------------------------------------------------------------------------------
STEP="1/4 tools"
TOOLS_PINS=(maturin==1.16.0 ziglang==0.15.2 auditwheel==6.8.2 wheel==0.48.0)
# FFmpeg's assembler, zlib's header, dpkg-source and the binutils; installed with apt-get as
# scripts/setup.sh installs its packages (as root), otherwise named.
APT_PACKAGES=(nasm zlib1g-dev dpkg-dev binutils)
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
tools_key=$(printf '%s ' "${TOOLS_PINS[@]}" "$("$PYTHON" -c 'import platform; print(platform.python_version())')" \
            | sha256sum | cut -c1-12)
TOOLS=$CACHE/wheel-tools-$tools_key
if [[ ! -f $TOOLS/.complete ]]; then
  say "creating the tools environment $TOOLS"
  rm -rf "$TOOLS"
  mkdir -p "$CACHE"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q "${TOOLS_PINS[@]}"
  touch "$TOOLS/.complete"
fi
ZIG_VERSION=$("$TOOLS/bin/python" -m ziglang version)

# --- 2. FFmpeg's source -----------------------------------------------------------------------
STEP="2/4 FFmpeg source"
DEB_VERSION=${R1OMNI_FFMPEG_DEB_VERSION:-$(dpkg-query -W -f='${source:Version}' libavcodec-dev 2>/dev/null || true)}
SRC_CACHE=$CACHE/src
APT_STATE=$CACHE/apt-src
apt_private() {  # apt with the distribution's repositories as deb-src entries, state in the cache
  apt-get -q -o Dir::Etc::SourceList="$APT_STATE/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
    -o Dir::State::Lists="$APT_STATE/lists" -o Dir::Cache="$APT_STATE/cache" -o APT::Sandbox::User=root "$@"
}
fetch_source() {
  mkdir -p "$APT_STATE/lists/partial" "$APT_STATE/cache/archives/partial" "$SRC_CACHE"
  local signed=""
  [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] && signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Origin: Debian' 'Target-Of: deb' \
    | sort -u | sed "s|^|deb-src $signed|" >"$APT_STATE/sources.list"
  if [[ ! -s $APT_STATE/sources.list ]]; then
    say "no Debian repository is configured for apt: FFmpeg's source comes from Debian's source package"
    exit 1
  fi
  apt_private update >/dev/null
  if [[ -z $DEB_VERSION ]]; then
    DEB_VERSION=$(apt_private showsrc ffmpeg 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -1)
  fi
  say "downloading Debian's ffmpeg source package $DEB_VERSION"
  (cd "$SRC_CACHE" && apt_private source --download-only "ffmpeg=$DEB_VERSION" >/dev/null)
}
dsc_of() { local v=${1#*:}; printf '%s/ffmpeg_%s.dsc' "$SRC_CACHE" "$v"; }
if [[ -z $DEB_VERSION || ! -f $(dsc_of "$DEB_VERSION") ]]; then
  fetch_source
fi
DSC=$(dsc_of "$DEB_VERSION")
UPSTREAM=${DEB_VERSION#*:}
UPSTREAM=${UPSTREAM%%-*}

# --- 3. FFmpeg --------------------------------------------------------------------------------
STEP="3/4 FFmpeg build"
DECODERS=(
  # video
  h264 hevc vp8 vp9 mpeg4 mjpeg h263 flv mpeg1video mpeg2video msmpeg4v1 msmpeg4v2 msmpeg4v3
  wmv1 wmv2 wmv3 vc1 rawvideo
  # audio (the float decoders of AAC and MPEG audio first, as in FFmpeg's own order)
  aac aac_latm mp3float mp3 mp2float mp2 mp1float mp1 opus vorbis flac alac ac3 eac3 wmav1 wmav2
  pcm_s16le pcm_s16be pcm_s24le pcm_s24be pcm_s32le pcm_s32be pcm_f32le pcm_f32be pcm_f64le
  pcm_f64be pcm_u8 pcm_s8 pcm_alaw pcm_mulaw adpcm_ms adpcm_ima_wav
)
DEMUXERS=(mov matroska avi wav ogg mp3 aac flac flv mpegps asf
  # still images: recognised so that loading one says so (no picture decoder is built)
  image2 png_pipe jpeg_pipe bmp_pipe webp_pipe tiff_pipe)
PARSERS=(h264 hevc vp8 vp9 mpeg4video mpegvideo mjpeg h263 vc1 aac aac_latm mpegaudio opus vorbis flac ac3)
join() { local IFS=,; printf '%s' "$*"; }
# The configure line without the machine's paths (those are not part of what was built).
CONFIG=(
  --disable-gpl --disable-nonfree --disable-version3
  --enable-static --disable-shared --enable-pic --disable-debug
  --disable-autodetect --enable-pthreads --enable-zlib
  --disable-programs --disable-doc --disable-avdevice --disable-avfilter --disable-postproc
  --disable-network --disable-everything --enable-swscale --enable-swresample
  --enable-protocol=file
  --enable-decoder="$(join "${DECODERS[@]}")"
  --enable-demuxer="$(join "${DEMUXERS[@]}")"
  --enable-parser="$(join "${PARSERS[@]}")"
  --enable-x86asm --x86asmexe=nasm --enable-runtime-cpudetect
)
ffmpeg_key=$(printf '%s\n' "$DEB_VERSION" "zig $ZIG_VERSION glibc $GLIBC" "${CONFIG[@]}" "HAVE_SYSCTL 0" \
             | sha256sum | cut -c1-12)
PREFIX=$CACHE/ffmpeg-$UPSTREAM-$ffmpeg_key
if [[ ! -f $PREFIX/.complete ]]; then
  build=$CACHE/ffmpeg-build-$ffmpeg_key
  rm -rf "$build" "$PREFIX"
  mkdir -p "$build/bin"
  # The C compiler: zig's clang against glibc $GLIBC's headers and stubs.
  cat >"$build/bin/cc" <<EOF
#!/bin/sh
exec "$TOOLS/bin/python" -m ziglang cc -target x86_64-linux-gnu.$GLIBC -fno-sanitize=all "\$@"
EOF
  chmod +x "$build/bin/cc"
  # zlib: libz.so.1 is in every manylinux policy. Its header comes from the system, after zig's
  # own libc headers; only libz goes into the link path (never the system's newer glibc), as a
  # link in FFmpeg's lib/ that the extension's link (build.rs) finds too.
  zlib_so=$(ls /usr/lib/"$(uname -m)"-linux-gnu/libz.so.1 /lib/"$(uname -m)"-linux-gnu/libz.so.1 2>/dev/null | head -1 || true)
  if [[ -z $zlib_so || ! -f /usr/include/zlib.h || ! -f /usr/include/zconf.h ]]; then
    say "zlib's header and library are required: install them with  sudo apt-get install -y zlib1g-dev"
    exit 1
  fi
  mkdir -p "$build/zlib/include" "$PREFIX/lib"
  cp /usr/include/zlib.h /usr/include/zconf.h "$build/zlib/include/"
  ln -s "$zlib_so" "$PREFIX/lib/libz.so"
  say "unpacking $(basename "$DSC")"
  # --no-check: the .dsc's own signature needs Debian's keyring; apt checked every file's hash
  # against the signed Sources index when it downloaded them.
  (cd "$build" && dpkg-source --no-check -x "$DSC" src >/dev/null)
  say "configuring FFmpeg $UPSTREAM (${#DECODERS[@]} decoders, ${#DEMUXERS[@]} demuxers)"
  log=$PREFIX/build.log
  start=$(date +%s)
  if ! (cd "$build/src" && ./configure --prefix="$PREFIX" --cc="$build/bin/cc" --ar=ar --ranlib=ranlib \
          --extra-cflags="-I$build/zlib/include" --extra-ldflags="-L$PREFIX/lib" \
          --pkg-config-flags=--static "${CONFIG[@]}" >"$log" 2>&1); then
    tail -n 30 "$build/src/ffbuild/config.log" >&2 || true
    say "FFmpeg's configure failed (log: $log)"
    exit 1
  fi
  # configure finds sysctl() among glibc 2.17's symbols, but zig ships the headers of a newer
  # glibc, which dropped <sys/sysctl.h> (2.32); a build on the system's glibc has it off too.
  sed -i 's/^#define HAVE_SYSCTL 1$/#define HAVE_SYSCTL 0/' "$build/src/config.h"
  for have in HAVE_PTHREADS HAVE_X86ASM CONFIG_ZLIB CONFIG_PIC; do
    if ! grep -q "^#define $have 1" "$build/src/config.h"; then
      say "FFmpeg's configure left $have off: see $build/src/ffbuild/config.log"
      exit 1
    fi
  done
  say "building FFmpeg with $JOBS jobs (log: $log)"
  if ! (cd "$build/src" && make -j"$JOBS" >>"$log" 2>&1 && make install >>"$log" 2>&1); then
    tail -n 30 "$log" >&2
    say "building FFmpeg failed (log: $log)"
    exit 1
  fi
  cp "$build/src/COPYING.LGPLv2.1" "$PREFIX/COPYING.LGPLv2.1"
  sed -n 's/^#define FFMPEG_LICENSE "\(.*\)"$/\1/p' "$build/src/config.h" >"$PREFIX/license"
  printf '%s\n' "$DEB_VERSION" >"$PREFIX/debian-version"
  say "FFmpeg built in $(($(date +%s) - start)) s"
  rm -rf "$build"
  touch "$PREFIX/.complete"
fi

# --- 4. the wheel -------------------------------------------------------------------------------
STEP="4/4 wheel"
export CARGO_TARGET_DIR=${R1OMNI_WHEEL_TARGET:-$CACHE/target-wheel}
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
say "building the wheel (maturin --zig, $TAG)"
(cd "$ROOT" && PATH="$TOOLS/bin:$PATH" FFMPEG_DIR=$PREFIX PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig \
  "$TOOLS/bin/maturin" build --release --zig --compatibility "$TAG" --features python,static-ffmpeg \
  --auditwheel check -o "$staging" >&2)
wheels=("$staging"/r1omni_fast-*.whl)
if ((${#wheels[@]} != 1)); then
  say "expected one wheel in $staging, found: ${wheels[*]}"
  exit 1
fi
# The licence notice: FFmpeg's licence and configure line as compiled into the libraries.
"$TOOLS/bin/python" -m wheel unpack -d "$staging/unpacked" "${wheels[0]}" >/dev/null
unpacked=("$staging"/unpacked/*)
dist_info=("$unpacked"/*.dist-info)
mkdir -p "$dist_info/licenses"
cp "$PREFIX/COPYING.LGPLv2.1" "$dist_info/licenses/FFmpeg-COPYING.LGPLv2.1"
{
  printf 'r1omni_fast/_native links FFmpeg %s statically (Debian source package ffmpeg %s).\n' \
    "$UPSTREAM" "$(cat "$PREFIX/debian-version")"
  printf 'FFmpeg licence: %s; its text: FFmpeg-COPYING.LGPLv2.1.\n' \
    "$(cat "$PREFIX/license")"
  printf 'FFmpeg configure line: %s\n' "${CONFIG[*]}"
  printf 'FFmpeg source: https://ffmpeg.org/releases/ffmpeg-%s.tar.xz; Debian patches:\n' "$UPSTREAM"
  printf 'https://sources.debian.org/src/ffmpeg/%s/debian/patches/\n' "${DEB_VERSION#*:}"
  printf 'The source of r1omni-fast itself, to rebuild or relink against another FFmpeg,\n'
  printf 'is its source distribution; scripts/build-wheel.sh rebuilds this wheel.\n'
  printf '`r1omni-fast env` prints the licence and configure line compiled into the library.\n'
} >"$dist_info/licenses/FFmpeg-NOTICE.txt"
for f in FFmpeg-NOTICE.txt FFmpeg-COPYING.LGPLv2.1; do
  printf 'License-File: licenses/%s\n' "$f"
done >"$staging/license-lines"
"$TOOLS/bin/python" - "$dist_info/METADATA" "$staging/license-lines" <<'PY'
import sys
meta, extra = open(sys.argv[1]).read(), open(sys.argv[2]).read()
head, sep, body = meta.partition("\n\n")
open(sys.argv[1], "w").write(head.rstrip("\n") + "\n" + extra.rstrip("\n") + sep + body)
PY
mkdir -p "$OUT"
rm -f "$OUT/$(basename "${wheels[0]}")"
"$TOOLS/bin/python" -m wheel pack -d "$OUT" "$unpacked" >/dev/null
wheel=$OUT/$(basename "${wheels[0]}")
[[ -f $wheel ]] || { say "wheel pack did not write $wheel"; exit 1; }
STEP="auditwheel show"
"$TOOLS/bin/auditwheel" show "$wheel" >&2
say "wheel: $wheel ($(du -h "$wheel" | cut -f1))"
trap - ERR
printf '%s\n' "$wheel"
