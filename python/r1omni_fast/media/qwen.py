"""Media of the Qwen2.5-Omni backend: frames sampled by time as ``qwen-omni-utils`` does and
smart-resized (natively, ``r1omni_fast.media.qwen_video``), and 16 kHz audio from a separate file
or the video's own track. Sources: ``qwen-omni-utils``' ``vision_process.py`` / ``audio_process.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np


SAMPLE_RATE = 16000


@dataclass
class QwenMediaSettings:
    """Frame timing and sizing of ``qwen-omni-utils`` (``vision_process.py``): ``fps`` frames per
    second, ``min_frames``/``max_frames`` (rounded to even), per-frame pixels in
    [``min_pixels``, ``max_pixels``] and at most ``total_pixels`` over the clip; ``factor`` 28
    (patch 14 x merge 2; Qwen3-Omni: 32, patch 16 x merge 2), the multiple frame sides are
    resized to. ``max_audio_seconds``: audio kept (Whisper's 30 s window; None: the whole track)."""

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 768
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    total_pixels: float = 128000 * 28 * 28 * 0.9
    factor: int = 28
    max_audio_seconds: Optional[float] = 30.0

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps={self.fps}: must be > 0")
        if self.max_frames < 2:
            raise ValueError(f"max_frames={self.max_frames}: Qwen2.5-Omni needs at least 2 frames (one temporal patch)")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels={self.min_pixels} > max_pixels={self.max_pixels}")


@dataclass
class QwenClip:
    """One clip's media for Qwen2.5-Omni: ``frames`` uint8 (T, H, W, 3), T even, H and W multiples
    of the settings' ``factor``; ``sample_fps`` frames per second of the sampled frames; ``frame_indices`` (T,) int64;
    ``audio`` float32 (n,) at 16 kHz or None; ``audio_source`` "video" (the file's own track),
    "file" (a separate audio file) or None."""

    frames: np.ndarray
    sample_fps: float
    frame_indices: np.ndarray
    audio: Optional[np.ndarray] = None
    audio_source: Optional[str] = None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


def load_qwen_clip(video: str | os.PathLike, *, audio_path: str | os.PathLike | None = None, audio: bool = True,
                   require_audio: bool = False, settings: QwenMediaSettings | None = None) -> QwenClip:
    """THE media step of this backend (one clip): frames sampled by time and smart-resized, and
    16 kHz audio (see the module docstring).

    ``audio``: load audio (from ``audio_path`` when given, else the video's own track);
    ``require_audio``: a missing audio stream is an error instead of ``audio=None``.
    Returns a :class:`QwenClip`. Raises ``MediaError`` naming the file for an undecodable input,
    a clip under 2 frames or missing required audio.
    """
    from r1omni_fast.media import MediaError, load_audio, load_clip, qwen_frame_indices, qwen_video

    settings = settings or QwenMediaSettings()
    path = os.fspath(video)
    probe = load_clip(path, num_frames=1, image_size=16, aspect="resize", audio=False)
    try:
        idx, _ = qwen_frame_indices(int(probe.num_video_frames), float(probe.fps), fps=settings.fps,
                                    min_frames=settings.min_frames, max_frames=settings.max_frames)
    except ValueError as exc:
        raise MediaError(path, str(exc)) from None
    # native: decoded, sampled by time and resized as qwen-omni-utils' fetch_video (bit-exact)
    frames, sample_fps = qwen_video(path, fps=settings.fps, min_frames=settings.min_frames,
                                    max_frames=settings.max_frames, min_pixels=settings.min_pixels,
                                    max_pixels=settings.max_pixels, total_pixels=settings.total_pixels,
                                    factor=settings.factor)
    if len(frames) != len(idx):
        raise MediaError(path, f"{len(frames)} frames decoded where {len(idx)} were sampled")
    wave, source = None, None
    if audio:
        source_path = path if audio_path is None else os.fspath(audio_path)
        wave = load_audio(source_path, max_seconds=settings.max_audio_seconds)
        if wave is None and require_audio:
            what = "the audio file" if audio_path is not None else "the video"
            raise MediaError(source_path, f"{what} has no audio stream but the record asks for audio (<audio> in "
                                          "its prompt): give the record an audio file with sound, or remove <audio>")
        source = None if wave is None else ("file" if audio_path is not None else "video")
    return QwenClip(frames, float(sample_fps), np.asarray(idx, np.int64), wave, source)


def load_qwen_batch(paths: Sequence[str], *, audio_paths: Sequence[Optional[str]] | None = None,
                    audio: bool | Sequence[bool] = True, require_audio: bool | Sequence[bool] = False,
                    settings: QwenMediaSettings | None = None, threads: int | None = None, **ignored: Any) -> list:
    """:func:`load_qwen_clip` over ``paths`` (``audio`` / ``require_audio`` one flag or one per
    path): a list of :class:`QwenClip` or ``MediaError`` per path, in order. Other keyword
    arguments (HumanOmni's loader settings, e.g. from ``data check``) are ignored."""
    from concurrent.futures import ThreadPoolExecutor

    from r1omni_fast.media import MediaError

    n = len(paths)
    audio_paths = list(audio_paths) if audio_paths is not None else [None] * n
    want = list(audio) if isinstance(audio, (list, tuple)) else [bool(audio)] * n
    need = list(require_audio) if isinstance(require_audio, (list, tuple)) else [bool(require_audio)] * n

    def one(i: int):
        try:
            return load_qwen_clip(paths[i], audio_path=audio_paths[i], audio=want[i], require_audio=need[i],
                                  settings=settings)
        except MediaError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, threads or min(4, n))) as pool:
        return list(pool.map(one, range(n)))


