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
    def answers(self, completions: list[str]) -> list[str | None]:
        """R1-Omni's answer text (mode r1omni) or the label named, else None (mode robust)."""

def parse_completion(text: str) -> tuple[str | None, str | None, bool]:
    """(think, answer, well_formed) of one completion."""

def _panicking_batch_for_tests(n: int, panic_at: int) -> npt.NDArray[np.float64]:
    """Test hook: a parallel batch whose item ``panic_at`` panics; raises RuntimeError."""

# --- end rewards ---
# --- media (rust/media; wrapped by r1omni_fast.media, which documents the contract) ---

# The clip options of media_load_clip / media_load_batch are keyword arguments named and typed
# as the keywords of r1omni_fast.media.load_clip; one not given keeps load_clip's default
# (rust/media/clip.rs ClipOptions::default). An unknown one is a TypeError.

def media_load_clip(path: str, **options: object) -> dict[str, object]:
    """One clip as a dict of the ``Clip`` fields; raises ``r1omni_fast.media.MediaError``."""

def media_load_batch(paths: list[str], threads: int, **options: object) -> list[dict[str, object] | Exception]:
    """Clips in parallel (GIL released; threads = 0: all cores), in order; a failed item is
    its ``MediaError``. ``audio_path`` is not an option here."""

def media_decode_frames(
    path: str, indices: list[int], max_dimension: int, decoder_threads: int
) -> npt.NDArray[np.uint8]:
    """RGB24 frames (k, H, W, 3) at presentation indices."""

def media_load_audio(
    path: str, downmix: str, max_seconds: float | None
) -> npt.NDArray[np.float32] | None:
    """First audio stream as 16 kHz mono float32, or None."""

def media_preprocess_frame(
    rgb: npt.NDArray[np.uint8], image_size: int, aspect: str, mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> npt.NDArray[np.float32]:
    """(H, W, 3) uint8 -> (3, S, S) float32: pad (or not), Pillow's bicubic, normalise."""

def media_whisper_log_mel(samples: npt.NDArray[np.float32], n_mels: int) -> npt.NDArray[np.float32]:
    """Whisper log-mel (n_mels, 3000)."""

def media_log_mel(
    samples: npt.NDArray[np.float32], n_mels: int, n_samples: int, frames: int
) -> npt.NDArray[np.float32]:
    """Whisper log-mel of the signal padded/cut to n_samples, its first frames: (n_mels, frames)."""

def media_mel_fft_floor(samples: npt.NDArray[np.float32]) -> int:
    """The float64 FFTs alone of media_whisper_log_mel(samples) (the benchmark's floor); how many ran."""

def media_probe_video(path: str, max_dimension: int) -> dict[str, object]:
    """num_frames, declared_frames, fps, width, height (upright) of the first video stream."""

def media_decode_resized(
    path: str, indices: list[int], height: int, width: int, max_dimension: int,
    decoder_threads: int,
) -> npt.NDArray[np.uint8]:
    """Frames at presentation indices, upright, torchvision-bicubic-antialias resized: (k, h, w, 3)."""

def media_resize_bicubic_antialias(
    frames: npt.NDArray[np.uint8], height: int, width: int
) -> npt.NDArray[np.uint8]:
    """(k, H, W, 3) -> (k, height, width, 3) as torchvision's antialiased bicubic resize."""
# --- end media ---
