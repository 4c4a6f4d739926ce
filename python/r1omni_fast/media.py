"""Model-ready video frames and Whisper log-mel features (DESIGN.md §2).

Backed by the native extension (``r1omni_fast._native``, FFmpeg + rayon, GIL released). The PyAV
implementation in :mod:`r1omni_fast.media_pyav` (the tests' reference) is used only when asked
for with ``backend="pyav"``; a missing extension is an error that says how to build it. Both
follow one contract:

- frames are those FFmpeg presents: N counts the packets of the first video stream that are not
  discarded (an MP4 edit list keeps some only as references); the container's declared count
  is a hint (``Clip.declared_frames``), never an integrity check;
- HumanOmni "v1" sampling: ``seg = (N-1)/k``, frame i = ``floor(seg*(i+0.5) + 1e-6 + 0.5)``
  (halves round up; clips shorter than k repeat frames);
- YUV -> RGB24 at full size, the display matrix applied as FFmpeg's command line applies it
  (90/180/270 degrees and flips), then ``aspect="pad"`` (grey ``int(mean*255)`` square) or
  ``"resize"``, bicubic resize bit-exact with Pillow's ``Image.resize(..., BICUBIC)``, float32
  ``(x/255 - mean)/std`` as ``(k, 3, S, S)``;
- audio: first audio stream (or ``audio_path``), downmixed to mono with FFmpeg's channel matrix
  (``downmix="ffmpeg"``, as decord's ``AudioReader(mono=True)`` gave HumanOmni) or the channel
  mean (``downmix="mean"``), 16 kHz float32, NaN -> 0; only the first 30 s (what the features
  use) are decoded; Whisper log-mel ``(n_mels, 3000)`` equal to
  ``transformers.WhisperFeatureExtractor``.

Requests are bounded before anything is allocated: ``num_frames <= max_num_frames``
(default :data:`MAX_NUM_FRAMES`), ``image_size <= max_image_size`` (:data:`MAX_IMAGE_SIZE`),
and the float32 outputs of the whole call (frames and mel of every clip) at most
``max_output_bytes`` (:data:`MAX_OUTPUT_BYTES`); a request over them is a ``ValueError``
naming the limit.

Every failure on an input is a :class:`MediaError` naming it; nothing crashes the process.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["Clip", "MediaError", "decode_frames", "load_audio", "load_batch", "load_clip",
           "preprocess_frame", "output_bytes",
           "whisper_log_mel", "native_available", "DEFAULT_MAX_DIMENSION", "MAX_NUM_FRAMES",
           "MAX_IMAGE_SIZE", "MAX_OUTPUT_BYTES", "BACKENDS", "DOWNMIXES"]

DEFAULT_MAX_DIMENSION = 8192
"""Largest accepted picture width or height; larger streams are refused as absurd."""

MAX_NUM_FRAMES = 1024
"""Default ``max_num_frames``: the largest ``num_frames`` accepted."""

MAX_IMAGE_SIZE = 4096
"""Default ``max_image_size``: the largest ``image_size`` (output side, pixels) accepted."""

MAX_OUTPUT_BYTES = 4 << 30
"""Default ``max_output_bytes`` (4 GiB): the float32 frames and mels of one call, all clips."""

BACKENDS = ("native", "pyav")
"""``"native"``: the extension (default); ``"pyav"``: the slow PyAV reference, by choice only."""

DOWNMIXES = ("ffmpeg", "mean")
"""Mono from several channels: FFmpeg's channel matrix (default) or the plain mean."""

AUDIO_SECONDS = 30.0
"""Seconds of audio a clip decodes: the Whisper features use the first 30 s."""


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


_BUILD_HINT = ("build it with `scripts/setup.sh` (or `maturin develop --release --features "
               "python`), or pass backend=\"pyav\" for the slow PyAV reference")


def _native():
    """The extension module, or None when it is not built/installed."""
    try:
        from r1omni_fast import _native as native
    except ImportError:
        return None
    return native if hasattr(native, "media_load_clip") else None


def native_available() -> bool:
    """True when the native decoder is built and importable."""
    return _native() is not None


def _backend(backend: str):
    """The native module for ``backend="native"``, None for ``"pyav"``; raises otherwise."""
    if backend == "pyav":
        return None
    if backend != "native":
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    native = _native()
    if native is None:
        raise ImportError("the native media extension r1omni_fast._native is missing: "
                          + _BUILD_HINT)
    return native


def _norm3(v, name) -> tuple:
    t = tuple(float(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"{name} must have 3 values (R, G, B), got {len(t)}")
    return t


def output_bytes(num_frames: int, image_size: int, n_mels: int, audio: bool) -> int:
    """Bytes of one clip's float32 outputs: frames (k, 3, S, S) plus mel (n_mels, 3000)."""
    return 4 * (int(num_frames) * 3 * int(image_size) ** 2 + (int(n_mels) * 3000 if audio else 0))


def _check(num_frames, image_size, aspect, n_mels, max_dimension, std, *, clips=1, audio=True,
           max_num_frames=MAX_NUM_FRAMES, max_image_size=MAX_IMAGE_SIZE,
           max_output_bytes=MAX_OUTPUT_BYTES, downmix="ffmpeg"):
    if not 1 <= int(num_frames) <= int(max_num_frames):
        raise ValueError(f"num_frames must be between 1 and max_num_frames={max_num_frames}, "
                         f"got {num_frames}")
    if not 1 <= int(image_size) <= int(max_image_size):
        raise ValueError(f"image_size must be between 1 and max_image_size={max_image_size}, "
                         f"got {image_size}")
    if aspect not in ("pad", "resize"):
        raise ValueError(f'aspect must be "pad" or "resize", got {aspect!r}')
    if not 1 <= int(n_mels) <= 512:
        raise ValueError(f"n_mels must be between 1 and 512, got {n_mels}")
    if int(max_dimension) < 1:
        raise ValueError(f"max_dimension must be positive, got {max_dimension}")
    if any(s == 0 for s in std):
        raise ValueError("std values must be non-zero")
    if downmix not in DOWNMIXES:
        raise ValueError(f"downmix must be one of {DOWNMIXES}, got {downmix!r}")
    total = clips * output_bytes(num_frames, image_size, n_mels, audio)
    if total > int(max_output_bytes):
        raise ValueError(f"the outputs of {clips} clip(s) (num_frames={num_frames}, "
                         f"image_size={image_size}) need {total} bytes, over "
                         f"max_output_bytes={max_output_bytes}; lower num_frames, image_size or "
                         f"the batch, or raise max_output_bytes")


def _limits(downmix, max_num_frames, max_image_size, max_output_bytes) -> tuple:
    return (str(downmix), int(max_num_frames), int(max_image_size), int(max_output_bytes))


def _clip(d: dict) -> Clip:
    return Clip(**d)


def load_clip(path, *, num_frames: int = 8, image_size: int = 224, aspect: str = "pad",
              mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
              n_mels: int = 128, audio: bool = True, require_audio: bool = False,
              audio_path=None, max_dimension: int = DEFAULT_MAX_DIMENSION,
              decoder_threads: int = 0, downmix: str = "ffmpeg",
              max_num_frames: int = MAX_NUM_FRAMES, max_image_size: int = MAX_IMAGE_SIZE,
              max_output_bytes: int = MAX_OUTPUT_BYTES, backend: str = "native") -> Clip:
    """Decode one clip into model inputs (see the module docstring for the contract).

    ``audio_path`` reads the audio from a separate file; ``require_audio=True`` makes a missing
    audio stream an error instead of a silent (zero-signal) mel; ``decoder_threads`` = 0 lets
    FFmpeg pick the decoder's frame threads; ``downmix`` is "ffmpeg" or "mean".
    Raises :class:`MediaError` for an input that cannot be decoded, ``ValueError`` for options
    out of range (the limits included), ``ImportError`` when the native extension is missing.
    """
    mean, std = _norm3(mean, "mean"), _norm3(std, "std")
    _check(num_frames, image_size, aspect, n_mels, max_dimension, std, audio=audio,
           max_num_frames=max_num_frames, max_image_size=max_image_size,
           max_output_bytes=max_output_bytes, downmix=downmix)
    native = _backend(backend)
    path = os.fspath(path)
    if native is None:
        from r1omni_fast import media_pyav

        return media_pyav.load_clip(path, num_frames=num_frames, image_size=image_size,
                                    aspect=aspect, mean=mean, std=std, n_mels=n_mels, audio=audio,
                                    require_audio=require_audio, audio_path=audio_path,
                                    max_dimension=max_dimension, downmix=downmix)
    d = native.media_load_clip(path, int(num_frames), int(image_size), aspect, mean, std,
                               int(n_mels), bool(audio), bool(require_audio),
                               None if audio_path is None else os.fspath(audio_path),
                               int(max_dimension), int(decoder_threads),
                               _limits(downmix, max_num_frames, max_image_size, max_output_bytes))
    return _clip(d)


def load_batch(paths, *, threads: Optional[int] = None, num_frames: int = 8,
               image_size: int = 224, aspect: str = "pad",
               mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
               n_mels: int = 128, audio: bool = True, require_audio: bool = False,
               max_dimension: int = DEFAULT_MAX_DIMENSION,
               decoder_threads: int = 1, audio_paths: Optional[Sequence] = None,
               downmix: str = "ffmpeg", max_num_frames: int = MAX_NUM_FRAMES,
               max_image_size: int = MAX_IMAGE_SIZE, max_output_bytes: int = MAX_OUTPUT_BYTES,
               backend: str = "native") -> list:
    """``load_clip`` over many paths in parallel (one clip per worker thread, GIL released).

    Returns a list in input order holding a :class:`Clip` or, for an input that failed, its
    :class:`MediaError` (the other items are unaffected). ``threads`` = None uses all cores.
    Each clip decodes with ``decoder_threads`` (default 1: the parallelism is across clips).
    ``audio_paths`` (one entry per path, None = the clip's own audio stream) reads the audio of
    those items from separate files. ``max_output_bytes`` bounds the outputs of the whole batch.
    """
    mean, std = _norm3(mean, "mean"), _norm3(std, "std")
    paths = [os.fspath(p) for p in paths]
    _check(num_frames, image_size, aspect, n_mels, max_dimension, std, clips=len(paths),
           audio=audio, max_num_frames=max_num_frames, max_image_size=max_image_size,
           max_output_bytes=max_output_bytes, downmix=downmix)
    native = _backend(backend)
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    same = dict(num_frames=num_frames, image_size=image_size, aspect=aspect, mean=mean,
                std=std, n_mels=n_mels, audio=audio, require_audio=require_audio,
                max_dimension=max_dimension, decoder_threads=decoder_threads, downmix=downmix,
                max_num_frames=max_num_frames, max_image_size=max_image_size,
                max_output_bytes=max_output_bytes, backend=backend)
    if audio_paths is not None and any(a is not None for a in audio_paths):
        audio_paths = list(audio_paths)
        if len(audio_paths) != len(paths):
            raise ValueError(f"audio_paths has {len(audio_paths)} entries for {len(paths)} paths")

        def one(item):
            try:
                return load_clip(item[0], audio_path=item[1], **same)
            except MediaError as exc:
                return exc

        # load_clip releases the GIL in native code, so threads decode clips in parallel.
        with ThreadPoolExecutor(max_workers=int(threads or os.cpu_count() or 1)) as pool:
            return list(pool.map(one, zip(paths, audio_paths)))
    if native is None:
        from r1omni_fast import media_pyav

        return media_pyav.load_batch(paths, num_frames=num_frames, image_size=image_size,
                                     aspect=aspect, mean=mean, std=std, n_mels=n_mels,
                                     audio=audio, require_audio=require_audio,
                                     max_dimension=max_dimension, downmix=downmix)
    items = native.media_load_batch(paths, 0 if threads is None else int(threads),
                                    int(num_frames), int(image_size), aspect, mean, std,
                                    int(n_mels), bool(audio), bool(require_audio),
                                    int(max_dimension), int(decoder_threads),
                                    _limits(downmix, max_num_frames, max_image_size,
                                            max_output_bytes))
    return [item if isinstance(item, MediaError) else _clip(item) for item in items]


def decode_frames(path, indices: Sequence[int], *, max_dimension: int = DEFAULT_MAX_DIMENSION,
                  decoder_threads: int = 0, backend: str = "native") -> np.ndarray:
    """RGB24 frames at presentation ``indices`` as FFmpeg presents them (display matrix
    applied): uint8 (k, H, W, 3), no resize. Raises :class:`MediaError` for a bad input or index."""
    path = os.fspath(path)
    idx = [int(i) for i in indices]
    native = _backend(backend)
    if native is None:
        from r1omni_fast import media_pyav

        return media_pyav.decode_frames(path, idx, max_dimension=max_dimension)
    return native.media_decode_frames(path, idx, int(max_dimension), int(decoder_threads))


def load_audio(path, *, downmix: str = "ffmpeg", max_seconds: Optional[float] = None,
               backend: str = "native") -> Optional[np.ndarray]:
    """First audio stream of ``path`` as 16 kHz mono float32 (n,), or None when it has none.

    ``downmix``: "ffmpeg" (FFmpeg's channel matrix, default) or "mean"; ``max_seconds`` keeps
    only the first seconds (decoding stops soon after them)."""
    path = os.fspath(path)
    if downmix not in DOWNMIXES:
        raise ValueError(f"downmix must be one of {DOWNMIXES}, got {downmix!r}")
    if max_seconds is not None and not float(max_seconds) > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    native = _backend(backend)
    if native is None:
        from r1omni_fast import media_pyav

        return media_pyav.load_audio(path, downmix=downmix, max_seconds=max_seconds)
    return native.media_load_audio(path, downmix,
                                   None if max_seconds is None else float(max_seconds))


def preprocess_frame(rgb, image_size: int = 224, aspect: str = "pad", *,
                     mean: Sequence[float] = (0.5, 0.5, 0.5),
                     std: Sequence[float] = (0.5, 0.5, 0.5), backend: str = "native") -> np.ndarray:
    """The picture half of the pipeline on one RGB24 picture: uint8 (H, W, 3) -> float32
    (3, S, S). ``aspect="pad"`` pads to a square of grey ``int(mean*255)`` (HumanOmni's
    ``expand2square``); the bicubic resize is bit-exact with Pillow's ``Image.resize(...,
    BICUBIC)``; then ``(x/255 - mean)/std``. Raises ``ValueError`` for a bad shape or option."""
    mean, std = _norm3(mean, "mean"), _norm3(std, "std")
    a = np.ascontiguousarray(np.asarray(rgb))
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or 0 in a.shape:
        raise ValueError(f"rgb must be a non-empty (H, W, 3) uint8 array, got {a.dtype} {a.shape}")
    _check(1, image_size, aspect, 1, 1, std, audio=False)
    native = _backend(backend)
    if native is None:
        from r1omni_fast import media_pyav

        return media_pyav.preprocess_frame(a, int(image_size), aspect, mean, std)
    return native.media_preprocess_frame(a, int(image_size), aspect, mean, std)


def whisper_log_mel(samples, n_mels: int = 128, *, backend: str = "native") -> np.ndarray:
    """Whisper log-mel of 16 kHz mono samples: float32 (n_mels, 3000).

    Pad/cut to 30 s; STFT (n_fft 400, hop 160, periodic Hann, centred, reflect padding), power,
    Slaney mel filters 0-8000 Hz, ``log10(max(m, 1e-10))``, ``max(x, x.max() - 8)``,
    ``(x + 4) / 4``; equal to ``transformers.WhisperFeatureExtractor(feature_size=n_mels)``.
    """
    x = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1))
    if not 1 <= int(n_mels) <= 512:
        raise ValueError(f"n_mels must be between 1 and 512, got {n_mels}")
    native = _backend(backend)
    if native is None:
        from r1omni_fast import media_pyav

        return media_pyav.whisper_log_mel(x, int(n_mels))
    return native.media_whisper_log_mel(x, int(n_mels))
