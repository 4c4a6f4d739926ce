"""Type stubs for the native extension ``r1omni_fast._native`` (built from rust/python.rs)."""

__version__: str

def build_info() -> dict[str, str]:
    """Crate version, build profile, target and the versions of the native libraries linked."""

# --- rewards (rust/reward; see r1omni_fast.rewards for the semantics) ---

import numpy as np
import numpy.typing as npt

class RewardScorer:
    """Scores batches in parallel without the GIL; built once per mode and label set."""

    def __init__(
        self, mode: str, labels: list[str] | None = None, aliases: dict[str, str] | None = None
    ) -> None: ...
    @property
    def mode(self) -> str: ...
    @property
    def labels(self) -> list[str] | None: ...
    def score(
        self,
        completions: list[str],
        solutions: list[str] | None = None,
        *,
        format: bool = True,
        accuracy: bool = True,
    ) -> dict[str, npt.NDArray[np.float64]]:
        """Columns "format" and/or "accuracy" as float64 arrays."""

def parse_completion(text: str) -> tuple[str | None, str | None, bool]:
    """(think, answer, well_formed) of one completion."""

def _panicking_batch_for_tests(n: int, panic_at: int) -> npt.NDArray[np.float64]:
    """Test hook: a parallel batch whose item ``panic_at`` panics; raises RuntimeError."""

# --- end rewards ---
