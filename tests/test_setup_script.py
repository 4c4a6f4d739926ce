"""scripts/setup.sh against temporary caches, with the slow steps stubbed through the variables
the script documents (R1OMNI_SETUP_INSTALL, R1OMNI_SETUP_BUILD): exit status, the build step
reached, the pruning of stale environments, and the messages of its failures."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup.sh"

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None or shutil.which("cargo") is None,
                                reason="setup.sh targets Debian machines with cargo")


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def stubs(tmp_path):
    """Install and build stubs that record their calls in tmp_path/calls."""
    calls = tmp_path / "calls"
    install = _script(tmp_path / "install-stub", f'echo "install $1" >> {calls}\ntest -s "$1"\n')
    build = _script(tmp_path / "build-stub", f'echo "build $VIRTUAL_ENV" >> {calls}\n')
    return {"calls": calls, "R1OMNI_SETUP_INSTALL": str(install), "R1OMNI_SETUP_BUILD": str(build)}


def run_setup(cache: Path, stubs: dict, path_prefix: Path | None = None, **extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("R1OMNI_")}
    env.update(R1OMNI_CACHE=str(cache), PYTHON=sys.executable,
               R1OMNI_SETUP_INSTALL=stubs["R1OMNI_SETUP_INSTALL"], R1OMNI_SETUP_BUILD=stubs["R1OMNI_SETUP_BUILD"])
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=300)


def stale_env(cache: Path, name: str, age_s: float) -> Path:
    d = cache / name
    (d / "bin").mkdir(parents=True)
    (d / ".complete").touch()
    t = time.time() - age_s
    os.utime(d, (t, t))
    return d


def envs(cache: Path) -> set:
    return {p.name for p in cache.glob("venv-*")}


def test_empty_cache_creates_the_environment_and_reaches_the_build(tmp_path, stubs):
    cache = tmp_path / "cache"
    r = run_setup(cache, stubs)
    assert r.returncode == 0, r.stderr
    (current,) = envs(cache)
    assert (cache / "venv").resolve() == (cache / current).resolve()
    assert (cache / current / ".complete").exists()
    calls = stubs["calls"].read_text().splitlines()
    assert calls == [f"install {cache / current / 'requirements.txt'}", f"build {cache / current}"]
    assert "torch" in (cache / current / "requirements.txt").read_text()
    assert "[setup] ready:" in r.stderr


def test_one_environment_is_reused_and_nothing_is_pruned(tmp_path, stubs):
    cache = tmp_path / "cache"
    assert run_setup(cache, stubs).returncode == 0
    (current,) = envs(cache)
    stubs["calls"].unlink()
    r = run_setup(cache, stubs)
    assert r.returncode == 0, r.stderr
    assert f"reusing {cache / current}" in r.stderr
    assert envs(cache) == {current}
    assert stubs["calls"].read_text().splitlines() == [f"build {cache / current}"]  # no reinstall


def test_three_environments_keep_the_current_and_the_newest_other(tmp_path, stubs):
    cache = tmp_path / "cache"
    assert run_setup(cache, stubs).returncode == 0
    (current,) = envs(cache)
    stale_env(cache, "venv-0000000000000old", 7200)
    stale_env(cache, "venv-0000000000000new", 60)
    r = run_setup(cache, stubs)
    assert r.returncode == 0, r.stderr
    assert envs(cache) == {current, "venv-0000000000000new"}
    assert f"removing stale environment {cache / 'venv-0000000000000old'}" in r.stderr


def test_three_older_environments_and_a_new_dependency_list(tmp_path, stubs):
    cache = tmp_path / "cache"
    for i, age in enumerate((300, 200, 100)):
        stale_env(cache, f"venv-00000000000000{i}", age)
    r = run_setup(cache, stubs)
    assert r.returncode == 0, r.stderr
    current = (cache / "venv").resolve().name
    assert envs(cache) == {current, "venv-000000000000002"}
    assert "build" in stubs["calls"].read_text()


def test_a_failing_step_names_itself(tmp_path, stubs):
    failing = _script(tmp_path / "fail", "exit 3\n")
    r = run_setup(tmp_path / "cache", stubs, R1OMNI_SETUP_INSTALL=str(failing))
    assert r.returncode == 3
    assert r.stderr.strip().splitlines()[-1].startswith("[setup] failed (exit 3) in step: 2/3 Python environment")
    assert not list((tmp_path / "cache").glob("venv-*/.complete"))  # not taken for a finished one
    r = run_setup(tmp_path / "cache2", stubs, R1OMNI_SETUP_BUILD=str(failing))
    assert r.returncode == 1
    assert "building the native extension failed" in r.stderr.strip().splitlines()[-1]


def _fake_system(bin_dir: Path, uid: int, missing: str) -> None:
    """`id -u` answers uid; dpkg-query reports `missing` as not installed; apt-get records its calls."""
    bin_dir.mkdir()
    _script(bin_dir / "id", f'if [[ "${{1:-}}" == -u ]]; then echo {uid}; else exec /usr/bin/id "$@"; fi\n')
    _script(bin_dir / "dpkg-query",
            f'pkg="${{@: -1}}"\nif [[ $pkg == {missing} ]]; then exit 1; fi\nprintf "install ok installed"\n')
    _script(bin_dir / "apt-get", f'echo "apt-get $*" >> {bin_dir}/apt-calls\n')


def test_without_root_a_missing_package_prints_the_install_line(tmp_path, stubs):
    _fake_system(tmp_path / "bin", uid=1000, missing="patchelf")
    r = run_setup(tmp_path / "cache", stubs, path_prefix=tmp_path / "bin")
    assert r.returncode != 0
    assert "sudo apt-get update && sudo apt-get install -y patchelf" in r.stderr
    assert not (tmp_path / "bin" / "apt-calls").exists()
    assert not stubs["calls"].exists()


def test_as_root_a_missing_package_is_installed_with_apt_get(tmp_path, stubs):
    _fake_system(tmp_path / "bin", uid=0, missing="patchelf")
    r = run_setup(tmp_path / "cache", stubs, path_prefix=tmp_path / "bin")
    assert r.returncode == 0, r.stderr
    calls = (tmp_path / "bin" / "apt-calls").read_text().splitlines()
    assert calls[0] == "apt-get update -qq"
    assert calls[1].startswith("apt-get install") and calls[1].endswith(" patchelf")


@pytest.mark.parametrize("package", ["chromium", "chromium-driver"])
def test_test_tools_are_installed_only_when_asked(tmp_path, stubs, package):
    _fake_system(tmp_path / "bin", uid=1000, missing=package)
    assert run_setup(tmp_path / "cache", stubs, path_prefix=tmp_path / "bin").returncode == 0
    r = subprocess.run(["bash", str(SETUP), "--with-test-tools"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
                                R1OMNI_CACHE=str(tmp_path / "cache"), **{k: v for k, v in stubs.items() if k != "calls"}))
    assert r.returncode == 1 and r.stderr.splitlines()[-1].endswith(f"sudo apt-get install -y {package}")
    r = subprocess.run(["bash", str(SETUP), "--bogus"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown argument --bogus" in r.stderr
