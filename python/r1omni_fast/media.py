"""Model-ready video frames and Whisper log-mel features (DESIGN.md §2).

Backed by the native extension (``r1omni_fast._native``, FFmpeg + rayon, GIL released); falls
back to the PyAV implementation in :mod:`r1omni_fast.media_pyav` when the extension is missing.
Both follow one contract:

- frame count N is exact (the packets of the first video stream);
- HumanOmni "v1" sampling: ``seg = (N-1)/k``, frame i = ``floor(seg*(i+0.5) + 1e-6 + 0.5)``
  (halves round up; clips shorter than k repeat frames);
- YUV -> RGB24 at full size, then ``aspect="pad"`` (grey ``int(mean*255)`` square) or
  ``"resize"``, bicubic resize equal to PIL BICUBIC, float32 ``(x/255 - mean)/std`` as
  ``(k, 3, S, S)``;
- audio: first audio stream (or ``audio_path``), mean of channels, 16 kHz float32, NaN -> 0;
  Whisper log-mel ``(n_mels, 3000)`` equal to ``transformers.WhisperFeatureExtractor``.

Every failure on an input is a :class:`MediaError` naming it; nothing crashes the process.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["Clip", "MediaError", "decode_frames", "load_audio", "load_batch", "load_clip",
           "whisper_log_mel", "native_available", "DEFAULT_MAX_DIMENSION"]

DEFAULT_MAX_DIMENSION = 8192
"""Largest accepted picture width or height; larger streams are refused as absurd."""


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

    frames: (k, 3, S, S) float32; frame_indices: (k,) int64; num_video_frames: N;
    fps: average frame rate; mel: (n_mels, 3000) float32 or None when ``audio=False``;
    has_audio: whether an audio stream was found; audio_seconds: its length at 16 kHz.
    """

    frames: np.ndarray
    frame_indices: np.ndarray
    num_video_frames: int
    fps: float
    mel: Optional[np.ndarray]
    has_audio: bool
    audio_seconds: float


def _native():
    """The extension module, or None when it is not built/installed."""
    try:
        from r1omni_fast import _native as native
    except ImportError:
        return None
    return native if hasattr(native, "media_load_clip") else None


def native_available() -> bool:
    """True when the native decoder is in use (else the PyAV fallback is)."""
    return _native() is not None


def _norm3(v, name) -> tuple:
    t = tuple(float(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"{name} must have 3 values (R, G, B), got {len(t)}")
    return t


def _check(num_frames, image_size, aspect, n_mels, max_dimension, std):
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if not 1 <= int(image_size) <= 4096:
        raise ValueError(f"image_size must be between 1 and 4096, got {image_size}")
    if aspect not in ("pad", "resize"):
        raise ValueError(f'aspect must be "pad" or "resize", got {aspect!r}')
    if not 1 <= int(n_mels) <= 512:
        raise ValueError(f"n_mels must be between 1 and 512, got {n_mels}")
    if int(max_dimension) < 1:
        raise ValueError(f"max_dimension must be positive, got {max_dimension}")
    if any(s == 0 for s in std):
        raise ValueError("std values must be non-zero")


def _clip(d: dict) -> Clip:
    return Clip(**d)


def load_clip(path, *, num_frames: int = 8, image_size: int = 224, aspect: str = "pad",
              mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
              n_mels: int = 128, audio: bool = True, require_audio: bool = False,
              audio_path=None, max_dimension: int = DEFAULT_MAX_DIMENSION,
              decoder_threads: int = 0) -> Clip:
    """Decode one clip into model inputs (see the module docstring for the contract).

    ``audio_path`` reads the audio from a separate file; ``require_audio=True`` makes a missing
    audio stream an error instead of a silent (zero-signal) mel; ``decoder_threads`` = 0 lets
    FFmpeg pick the decoder's frame threads.
    """
    mean, std = _norm3(mean, "mean"), _norm3(std, "std")
    _check(num_frames, image_size, aspect, n_mels, max_dimension, std)
    native = _native()
    path = os.fspath(path)
    if native is None:
        from r1omni_fast import media_pyav

        return media_pyav.load_clip(path, num_frames=num_frames, image_size=image_size,
                                    aspect=aspect, mean=mean, std=std, n_mels=n_mels, audio=audio,
                                    require_audio=require_audio, audio_path=audio_path,
                                    max_dimension=max_dimension)
    d = native.media_load_clip(path, int(num_frames), int(image_size), aspect, mean, std,
                               int(n_mels), bool(audio), bool(require_audio),
                               None if audio_path is None else os.fspath(audio_path),
                               int(max_dimension), int(decoder_threads))
    return _clip(d)


def load_batch(paths, *, threads: Optional[int] = None, num_frames: int = 8,
               image_size: int = 224, aspect: str = "pad",
               mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
               n_mels: int = 128, audio: bool = True, require_audio: bool = False,
               max_dimension: int = DEFAULT_MAX_DIMENSION,
               decoder_threads: int = 1, audio_paths: Optional[Sequence] = None) -> list:
    """``load_clip`` over many paths in parallel (one clip per worker thread, GIL released).

    Returns a list in input order holding a :class:`Clip` or, for an input that failed, its
    :class:`MediaError` (the other items are unaffected). ``threads`` = None uses all cores.
    Each clip decodes with ``decoder_threads`` (default 1: the parallelism is across clips).
    ``audio_paths`` (one entry per path, None = the clip's own audio stream) reads the audio of
    those items from separate files.
    """
    mean, std = _norm3(mean, "mean"), _norm3(std, "std")
    _check(num_frames, image_size, aspect, n_mels, max_dimension, std)
    paths = [os.fspath(p) for p in paths]
    if audio_paths is not None and any(a is not None for a in audio_paths):
        audio_paths = list(audio_paths)
        if len(audio_paths) != len(paths):
            raise ValueError(f"audio_paths has {len(audio_paths)} entries for {len(paths)} paths")
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        same = dict(num_frames=num_frames, image_size=image_size, aspect=aspect, mean=mean,
                    std=std, n_mels=n_mels, audio=audio, require_audio=require_audio,
                    max_dimension=max_dimension, decoder_threads=decoder_threads)

        def one(item):
            try:
                return load_clip(item[0], audio_path=item[1], **same)
            except MediaError as exc:
                return exc

        # load_clip releases the GIL in native code, so threads decode clips in parallel.
        with ThreadPoolExecutor(max_workers=int(threads or os.cpu_count() or 1)) as pool:
            return list(pool.map(one, zip(paths, audio_paths)))
    native = _native()
    if native is None:
        from r1omni_fast import media_pyav

        return media_pyav.load_batch(paths, num_frames=num_frames, image_size=image_size,
                                     aspect=aspect, mean=mean, std=std, n_mels=n_mels,
                                     audio=audio, require_audio=require_audio,
                                     max_dimension=max_dimension)
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    items = native.media_load_batch(paths, 0 if threads is None else int(threads),
                                    int(num_frames), int(image_size), aspect, mean, std,
                                    int(n_mels), bool(audio), bool(require_audio),
                                    int(max_dimension), int(decoder_threads))
    return [item if isinstance(item, MediaError) else _clip(item) for item in items]


def decode_frames(path, indices: Sequence[int], *, max_dimension: int = DEFAULT_MAX_DIMENSION,
                  decoder_threads: int = 0) -> np.ndarray:
    """Exact RGB24 frames at presentation ``indices``: uint8 (k, H, W, 3), no resize."""
    path = os.fspath(path)
    idx = [int(i) for i in indices]
    native = _native()
    if native is None:
        from r1omni_fast import media_pyav

        return media_pyav.decode_frames(path, idx, max_dimension=max_dimension)
    return native.media_decode_frames(path, idx, int(max_dimension), int(decoder_threads))


def load_audio(path) -> Optional[np.ndarray]:
    """First audio stream of ``path`` as 16 kHz mono float32, or None when it has none."""
    path = os.fspath(path)
    native = _native()
    if native is None:
        from r1omni_fast import media_pyav

        return media_pyav.load_audio(path)
    return native.media_load_audio(path)


def whisper_log_mel(samples, n_mels: int = 128) -> np.ndarray:
    """Whisper log-mel of 16 kHz mono samples: float32 (n_mels, 3000).

    Pad/cut to 30 s; STFT (n_fft 400, hop 160, periodic Hann, centred, reflect padding), power,
    Slaney mel filters 0-8000 Hz, ``log10(max(m, 1e-10))``, ``max(x, x.max() - 8)``,
    ``(x + 4) / 4``; equal to ``transformers.WhisperFeatureExtractor(feature_size=n_mels)``.
    """
    x = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1))
    if not 1 <= int(n_mels) <= 512:
        raise ValueError(f"n_mels must be between 1 and 512, got {n_mels}")
    native = _native()
    if native is None:
        from r1omni_fast import media_pyav

        return media_pyav.whisper_log_mel(x, int(n_mels))
    return native.media_whisper_log_mel(x, int(n_mels))
