"""The command line's CPU threading: passive OpenMP waiting unless the user chose a policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from r1omni_fast.threads import configure_cpu_threads


def test_passive_wait_is_set_when_nothing_is_chosen():
    env = {"PATH": "/bin"}
    assert configure_cpu_threads(env) is True
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


@pytest.mark.parametrize("chosen", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "100000"}])
def test_the_users_variables_win(chosen):
    env = dict(chosen)
    assert configure_cpu_threads(env) is False
    assert env == chosen


def _env_of_a_cli_process(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(overrides)
    out = subprocess.run([sys.executable, "-m", "r1omni_fast", "env"], env=env, capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split(None, 1) for line in out.strip().splitlines())


def test_a_cli_process_runs_torch_with_passive_waiting():
    info = _env_of_a_cli_process()
    assert info["OMP_WAIT_POLICY"] == "PASSIVE"
    plain = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert info["torch_threads"].startswith(f"{plain} intra-op")  # the number of threads is torch's own


def test_a_cli_process_keeps_the_users_thread_settings():
    info = _env_of_a_cli_process(OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1")
    assert info["OMP_WAIT_POLICY"] == "ACTIVE"
    assert info["torch_threads"].startswith("1 intra-op")
