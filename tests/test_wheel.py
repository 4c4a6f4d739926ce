"""The wheel: built into a temporary folder, installed into a fresh virtual environment, used
from outside the source tree. The fresh environment sees the cached dependencies through a
.pth file, so nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # minute-plus: left out by scripts/test.sh --quick

ROOT = Path(__file__).resolve().parents[1]


def _maturin() -> str:
    exe = Path(sys.executable).parent / "maturin"
    found = str(exe) if exe.exists() else shutil.which("maturin")
    if found is None:
        pytest.fail("maturin is not installed in the test environment: run scripts/setup.sh")
    return found


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    # The wheel's repair step rewrites the built library in its target folder (bundled FFmpeg
    # names), so the wheel gets a target folder of its own, never the one `maturin develop`
    # installs from, and the crate itself is rebuilt each time (its dependencies stay cached).
    develop_target = os.environ.get("CARGO_TARGET_DIR")
    target = (Path(develop_target).parent / "target-wheel" if develop_target
              else tmp_path_factory.mktemp("target"))
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    subprocess.run(["cargo", "clean", "--release", "-q", "-p", "r1omni-fast"], cwd=ROOT, env=env,
                   check=False)
    subprocess.run([_maturin(), "build", "--release", "-q", "-o", str(dist)], cwd=ROOT,
                   env=env, check=True)
    wheels = list(dist.glob("r1omni_fast-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The cached dependencies, behind the new environment's own site-packages.
    (Path(purelib) / "cached_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip --python installs into the new environment, console script included.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", str(wheels[0])], check=True)
    return wheels[0], env_dir, Path(purelib)


def _run(env_dir: Path, *args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_wheel_ships_stub_and_marker(installed_wheel):
    wheel, _, purelib = installed_wheel
    assert "abi3" in wheel.name, "one wheel must serve every CPython >= 3.9"
    pkg = purelib / "r1omni_fast"
    assert (pkg / "py.typed").exists()
    assert (pkg / "_native.pyi").exists()
    assert (pkg / "eval" / "templates" / "report.html.j2").exists()  # report.html's template
    assert list(pkg.glob("_native*.so"))


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
    env_out = _run(env_dir, str(script), "env", cwd=tmp_path)
    lines = dict(line.split(None, 1) for line in env_out.strip().splitlines())
    assert lines["native.profile"] == "release"
    assert str(env_dir) in lines["python"], "the console script must run the new environment"


# --- media: the wheel carries the FFmpeg libraries it links ---
def test_installed_extension_bundles_ffmpeg(installed_wheel, tmp_path):
    """Every FFmpeg library the installed extension loads comes from the wheel (maturin's
    auditwheel repair grafts them into ``r1omni_fast.libs``), so it runs without FFmpeg's -dev
    packages; and the installed package decodes a clip."""
    _, env_dir, purelib = installed_wheel
    native = next((purelib / "r1omni_fast").glob("_native*.so"))
    ldd = subprocess.run(["ldd", str(native)], capture_output=True, text=True, check=True).stdout
    assert "not found" not in ldd, ldd
    ffmpeg = {}
    for line in ldd.splitlines():
        name, _, rest = line.strip().partition(" => ")
        if name.startswith(("libavcodec", "libavformat", "libavutil", "libswscale", "libswresample")):
            ffmpeg[name] = Path(rest.split(" (")[0]).resolve()
    assert len(ffmpeg) == 5, ldd
    for name, where in ffmpeg.items():
        assert where.is_relative_to(purelib.resolve()), f"{name} loads from {where}, not the wheel"
    sys.path.insert(0, str(ROOT / "tests"))
    import _media_fixtures as F

    clip = F.write_clip(F.ClipSpec("wheel", 64, 48, 6, audio_codec="aac"), tmp_path)
    code = ("import sys, r1omni_fast.media as m; c = m.load_clip(sys.argv[1], image_size=32); "
            "print(m.native_available(), c.frames.shape, c.has_audio)")
    out = _run(env_dir, str(env_dir / "bin" / "python"), "-c", code, str(clip), cwd=tmp_path)
    assert out.strip() == "True (8, 3, 32, 32) True"
# --- end media ---
