"""The media types every loader returns: :class:`Clip` and :class:`MediaError` (the native
loader and the PyAV reference alike; ``r1omni_fast.media`` re-exports both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


class MediaError(Exception):
    """A media input that could not be decoded: ``path`` and the ``reason``."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


@dataclass
class Clip:
    """One decoded clip.

    frames: (k, 3, S, S) float32; frame_indices: (k,) int64; num_video_frames: N, the frames
    FFmpeg presents (counted from the packets; sampling used this count); declared_frames: the
    container's declared count (0 when unknown; a hint only, it may differ from N); fps: the
    average frame rate, else the base rate, else from the presented timestamps, else from the
    packet durations (NaN when none exists; never 0); mel: (n_mels, 3000) float32 or None
    when ``audio=False``; has_audio: whether an audio stream was found; audio_seconds: the audio
    length in seconds (decoded samples / 16000 up to 31 s; beyond, from the packet timestamps,
    since decoding stops after the 30 s the features use).
    """

    frames: np.ndarray
    frame_indices: np.ndarray
    num_video_frames: int
    declared_frames: int
    fps: float
    mel: Optional[np.ndarray]
    has_audio: bool
    audio_seconds: float
