"""Shared pytest set-up. Fixtures of one area live in that area's own helper module
(tests/_media_fixtures.py, …), not here."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from r1omni_fast.threads import configure_cpu_threads

# As the command line does, before torch is imported: this process and the training processes
# the tests start (two ranks on two cores) wait for OpenMP work without spinning.
configure_cpu_threads()

# Triton kernels run in Triton's interpreter where there is no CUDA device; the variable must be
# set before triton is first imported.
try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover - torch is a hard dependency
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The CI machine has two slow cores: no per-example deadline, and a fixed example budget.
settings.register_profile("r1omni", deadline=None, max_examples=100, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "r1omni"))


def pytest_collection_modifyitems(config, items):
    if _HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


#: Skip reasons that mean a tool of the set-up is missing (not a property of the machine).
_MISSING_TOOL = ("ffmpeg command line is not installed", "native extension not built", "no Chromium here",
                 "no chromedriver here")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With ``R1OMNI_REQUIRE_ALL=1`` (``.ci/run``), a test skipped because FFmpeg, the native
    extension or Chromium is missing fails instead: CI cannot pass without the media suite."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("R1OMNI_REQUIRE_ALL") != "1" or not report.skipped:
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    if any(m in reason for m in _MISSING_TOOL):
        report.outcome = "failed"
        report.longrepr = f"R1OMNI_REQUIRE_ALL=1 and a required tool is missing: {reason}"
