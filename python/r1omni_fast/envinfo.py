"""Facts about the installation for bug reports: ``r1omni-fast env``."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version


def _dist(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def collect() -> dict[str, str]:
    """Versions of Python and the libraries r1omni-fast runs on, devices, and the native build."""
    import r1omni_fast

    info: dict[str, str] = {
        "r1omni-fast": r1omni_fast.__version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
    }
    for name in ("torch", "triton", "transformers", "numpy", "av"):
        info[name] = _dist(name)
    try:
        import torch

        cuda = torch.cuda.is_available()
        info["cuda_available"] = str(cuda)
        info["torch_threads"] = f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"
        if cuda:
            info["cuda_devices"] = ", ".join(
                torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
            )
            info["cuda_version"] = str(torch.version.cuda)
    except ImportError:
        info["cuda_available"] = "unknown (torch not importable)"
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "RAYON_NUM_THREADS"):
        if var in os.environ:
            info[var] = os.environ[var]
    try:
        from r1omni_fast import _native
    except ImportError as exc:
        info["native"] = f"not available ({exc})"
    else:
        for key, value in _native.build_info().items():
            info[f"native.{key}"] = value
    return info
