"""r1omni-fast: omni-modal (video + audio + text) emotion recognition trained with SFT and GRPO.

Importing this package never loads the native extension: the Triton kernels in
``r1omni_fast.kernels`` must import on a GPU machine that has only torch and triton.
Modules that need native code import ``r1omni_fast._native`` lazily, where it is used.
"""

from importlib.metadata import PackageNotFoundError, version as _dist_version

try:
    __version__ = _dist_version("r1omni-fast")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
