"""The wheel a package index can take (scripts/build-wheel.sh): built into a temporary folder,
checked for what it links and carries, installed into a fresh virtual environment and used from
outside the source tree, where the media tests run again against it. The fresh environment sees
the cached dependencies through a .pth file, so nothing is downloaded.

The oracles are independent of the build script: the ELF dynamic section and symbol versions
(readelf) against the manylinux2014 policy's list, the licence FFmpeg compiled into the library
(``r1omni-fast env`` in the fresh environment), and the development build's FFmpeg versions."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # minutes (FFmpeg from source on a cold cache): left out by --quick

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 25 * 1000**2  # 25 MB
TAG = "manylinux_2_17_x86_64"
MAX_GLIBC = (2, 17)
# What the extension may load: the system libraries of the manylinux2014 (manylinux_2_17) policy
# (PEP 599's list) that a Rust cdylib and a decode-only FFmpeg use.
POLICY_LIBS = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libgcc_s.so.1",
               "libz.so.1", "ld-linux-x86-64.so.2"}
# The media suite, run again with the installed wheel's extension.
MEDIA_TESTS = ["test_media.py", "test_media_bad_inputs.py", "test_media_qwen.py", "test_media_real_world.py",
               "test_data_collate.py"]


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory):
    """(wheel path, the build script's stderr: its log and `auditwheel show`)."""
    dist = tmp_path_factory.mktemp("dist")
    # Cargo's folder for the wheel sits beside the development build's, never inside it (the two
    # link different FFmpegs with different linkers); cached between runs.
    develop_target = os.environ.get("CARGO_TARGET_DIR")
    target = (Path(develop_target).parent / "target-wheel" if develop_target
              else tmp_path_factory.mktemp("target"))
    env = dict(os.environ, R1OMNI_WHEEL_TARGET=str(target))
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-wheel.sh"), "--out", str(dist)], cwd=ROOT,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-6000:]
    wheel = Path(out.stdout.strip().splitlines()[-1])
    assert wheel.parent == dist and wheel.exists(), out.stdout
    assert [p.name for p in dist.glob("*.whl")] == [wheel.name]
    return wheel, out.stderr


@pytest.fixture(scope="module")
def installed_wheel(built_wheel, tmp_path_factory):
    wheel, _ = built_wheel
    tmp = tmp_path_factory.mktemp("wheel")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The cached dependencies, behind the new environment's own site-packages (a path a .pth
    # adds is not a site folder: the development build's editable .pth there is not read).
    (Path(purelib) / "cached_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip --python installs into the new environment, console script included.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", str(wheel)], check=True)
    return wheel, env_dir, Path(purelib)


def _run(env_dir: Path, *args: str, cwd: Path, extra_env: dict | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra_env or {})
    out = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-6000:]
    return out.stdout


def _env_lines(env_dir: Path, cwd: Path) -> dict[str, str]:
    out = _run(env_dir, str(env_dir / "bin" / "r1omni-fast"), "env", cwd=cwd)
    return dict(line.split(None, 1) for line in out.strip().splitlines())


def _extension(wheel: Path, tmp_path: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        [name] = [n for n in z.namelist() if n.startswith("r1omni_fast/_native") and n.endswith(".so")]
        return Path(z.extract(name, tmp_path))


def test_wheel_name_size_and_contents(built_wheel):
    wheel, _ = built_wheel
    # One abi3 wheel for every CPython >= 3.10 (pyproject's requires-python, pyo3's abi3-py310).
    assert re.fullmatch(rf"r1omni_fast-[^-]+-cp310-abi3-(\S+\.)?{TAG}(\.\S+)?\.whl", wheel.name), wheel.name
    assert wheel.stat().st_size <= MAX_BYTES, f"{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB > 25 MB"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        shared = [n for n in names if re.search(r"\.so(\.|$)", n)]
        assert shared == ["r1omni_fast/_native.abi3.so"], f"the wheel bundles other libraries: {shared}"
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = z.read(meta_name).decode()
        dist_info = meta_name.rsplit("/", 1)[0]
        notice = z.read(f"{dist_info}/licenses/FFmpeg-NOTICE.txt").decode()
        lgpl = z.read(f"{dist_info}/licenses/FFmpeg-COPYING.LGPLv2.1").decode()
    assert "Requires-Python: >=3.10" in meta
    assert "Programming Language :: Python :: 3.10" in meta
    assert "License-File: licenses/FFmpeg-NOTICE.txt" in meta
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in lgpl and "Version 2.1" in lgpl
    assert "FFmpeg licence: LGPL version 2.1 or later" in notice, notice
    configure = next(line for line in notice.splitlines() if line.startswith("FFmpeg configure line: "))
    assert "--disable-gpl" in configure and "--enable-gpl" not in configure
    assert "--enable-nonfree" not in configure and "--enable-version3" not in configure


def test_extension_links_only_policy_libraries(built_wheel, tmp_path):
    """The ELF itself, read with readelf (not auditwheel): every DT_NEEDED entry is a system
    library of the manylinux2014 policy, no FFmpeg library among them, no symbol needs a glibc
    newer than 2.17, and no FFmpeg function is left undefined."""
    wheel, _ = built_wheel
    so = _extension(wheel, tmp_path)
    dynamic = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))
    assert needed and needed <= POLICY_LIBS, f"outside the policy: {needed - POLICY_LIBS}"
    versions = subprocess.run(["readelf", "-V", "--wide", str(so)], capture_output=True, text=True,
                              check=True).stdout
    glibc = {tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_(\d+(?:\.\d+)+)", versions)}
    assert glibc and max(glibc) <= MAX_GLIBC, f"needs glibc {max(glibc)} > {MAX_GLIBC}"
    # FFmpeg's calls into the system are resolved by the libraries above: zlib's (the only
    # non-glibc one) are undefined here and libz.so.1 is needed; no FFmpeg function is left
    # for another library to supply.
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(so)], capture_output=True, text=True,
                               check=True).stdout
    names = {line.split()[-1].split("@")[0] for line in undefined.splitlines() if line.strip()}
    assert not {n for n in names if n.startswith(("av_", "avcodec_", "avformat_", "sws_", "swr_"))}
    if {"inflate", "inflateInit_"} & names:
        assert "libz.so.1" in needed


def test_auditwheel_show_names_the_tag(built_wheel):
    _, log = built_wheel
    # auditwheel's own verdict, as the build script printed it (its lines wrapped at 72 columns).
    shown = " ".join(log.split("is consistent with", 1)[-1].split())
    assert "is consistent with" in log, log[-4000:]
    assert shown.startswith(f'the following platform tag: "{TAG}"'), shown[:300]
    assert "external shared libraries are required" not in shown, shown


def test_wheel_ships_stub_and_marker(installed_wheel):
    _, _, purelib = installed_wheel
    pkg = purelib / "r1omni_fast"
    assert (pkg / "py.typed").exists()
    assert (pkg / "_native.pyi").exists()
    assert (pkg / "eval" / "templates" / "report.html.j2").exists()  # report.html's template
    assert list(pkg.glob("_native*.so"))
    assert not (purelib / "r1omni_fast.libs").exists(), "the wheel must bundle no shared library"


def test_installed_package_imports_native_from_outside_the_tree(installed_wheel, tmp_path):
    _, env_dir, purelib = installed_wheel
    code = ("import r1omni_fast, r1omni_fast._native as n; "
            "print(r1omni_fast.__file__); print(n.__version__); print(n.build_info()['profile'])")
    lines = _run(env_dir, str(env_dir / "bin" / "python"), "-c", code, cwd=tmp_path).splitlines()
    assert Path(lines[0]).is_relative_to(purelib), f"imported from {lines[0]}, not the wheel"
    assert lines[2] == "release"


def test_console_script_version_and_env(installed_wheel, tmp_path):
    _, env_dir, _ = installed_wheel
    script = env_dir / "bin" / "r1omni-fast"
    assert script.exists(), "the wheel must declare the r1omni-fast console script"
    version = _run(env_dir, str(script), "--version", cwd=tmp_path)
    assert version.startswith("r1omni-fast, version ")
    lines = _env_lines(env_dir, tmp_path)
    assert lines["native.profile"] == "release"
    assert str(env_dir) in lines["python"], "the console script must run the new environment"


# --- media: FFmpeg linked in, LGPL, the development build's version ---
def test_env_prints_an_lgpl_ffmpeg_and_its_configure_line(installed_wheel, built_wheel, tmp_path):
    """`r1omni-fast env` of the installed wheel prints the licence and configure line FFmpeg
    compiled into the extension: LGPL, no GPL or nonfree part, linked statically, and the same
    configure line the wheel's notice records."""
    wheel, env_dir, _ = installed_wheel
    lines = _env_lines(env_dir, tmp_path)
    assert lines["native.ffmpeg.license"] == "LGPL version 2.1 or later", lines
    assert lines["native.ffmpeg.linkage"] == "static"
    configuration = lines["native.ffmpeg.configuration"]
    for forbidden in ("--enable-gpl", "--enable-nonfree", "--enable-version3", "--enable-shared"):
        assert forbidden not in configuration, configuration
    with zipfile.ZipFile(wheel) as z:
        notice = z.read(next(n for n in z.namelist() if n.endswith("licenses/FFmpeg-NOTICE.txt"))).decode()
    recorded = next(line for line in notice.splitlines() if line.startswith("FFmpeg configure line: "))
    compiled = shlex.split(configuration)  # FFmpeg quotes the options that hold commas
    for option in recorded.removeprefix("FFmpeg configure line: ").split():
        assert option in compiled, f"{option} recorded in the notice, not in the library"


def test_wheel_links_the_development_builds_ffmpeg_version(installed_wheel, tmp_path):
    """The wheel's FFmpeg is the version of the system FFmpeg the development build links (each
    library's major.minor.micro), so both decode with the same code."""
    _, env_dir, _ = installed_wheel
    from r1omni_fast import _native

    dev = _native.build_info()
    assert dev["ffmpeg.linkage"] == "shared", "the test process must run the development build"
    lines = _env_lines(env_dir, tmp_path)
    for lib in ("libavcodec", "libavformat", "libavutil", "libswscale", "libswresample"):
        assert lines[f"native.ffmpeg.{lib}"] == dev[f"ffmpeg.{lib}"], lib


def test_media_suite_passes_against_the_installed_wheel(installed_wheel, tmp_path):
    """The media tests, run by the fresh environment's interpreter from outside the source tree,
    after checking in that same process that r1omni_fast and its extension come from the wheel."""
    _, env_dir, purelib = installed_wheel
    tests = [str(ROOT / "tests" / name) for name in MEDIA_TESTS]
    code = (
        "import sys, pathlib, pytest, r1omni_fast, r1omni_fast._native as n\n"
        "site = pathlib.Path(sys.argv[1])\n"
        # the clone's root, for `import tests._media_fixtures`; r1omni_fast is already imported
        "sys.path.append(sys.argv[2])\n"
        "for mod in (r1omni_fast, n):\n"
        "    assert pathlib.Path(mod.__file__).is_relative_to(site), mod.__file__\n"
        "assert n.build_info()['ffmpeg.linkage'] == 'static'\n"
        "sys.exit(pytest.main(sys.argv[3:]))\n"
    )
    args = ["-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"), *tests]
    # R1OMNI_REQUIRE_ALL=1: a media test skipped for a missing tool fails.
    out = _run(env_dir, str(env_dir / "bin" / "python"), "-c", code, str(purelib), str(ROOT), *args, cwd=tmp_path,
               extra_env={"R1OMNI_REQUIRE_ALL": "1"})
    assert re.search(r"\d+ passed", out) and " failed" not in out, out[-3000:]
# --- end media ---
