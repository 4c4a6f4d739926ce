"""The click group: --version and env."""

from click.testing import CliRunner

import r1omni_fast
from r1omni_fast.cli import main


def test_version_flag_prints_package_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"r1omni-fast, version {r1omni_fast.__version__}"


def test_env_reports_libraries_devices_and_native_build():
    result = CliRunner().invoke(main, ["env"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.output.strip().splitlines())
    for key in ("python", "torch", "triton", "transformers", "numpy", "av", "cuda_available",
                "cpu_count", "native.version", "native.profile"):
        assert key in lines, f"{key} missing from `r1omni-fast env`:\n{result.output}"
    from r1omni_fast import _native

    assert lines["native.version"] == _native.__version__
    assert lines["native.profile"] == "release"


def test_unknown_command_fails_with_usage():
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_importing_package_does_not_load_native_extension():
    import subprocess
    import sys

    code = "import sys, r1omni_fast; print('r1omni_fast._native' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
