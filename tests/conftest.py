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
