"""Model-ready video frames and Whisper log-mel features (DESIGN.md §2).

Backed by the native extension (``r1omni_fast._native``, FFmpeg + rayon, GIL released). The PyAV
implementation in :mod:`r1omni_fast.media.pyav` (the tests' reference) is used only when asked
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
from typing import Optional, Sequence

import numpy as np

from r1omni_fast.media.types import Clip, MediaError

__all__ = ["Clip", "MediaError", "decode_frames", "load_audio", "load_batch", "load_clip",
           "preprocess_frame", "output_bytes",
           "whisper_log_mel", "native_available", "DEFAULT_MAX_DIMENSION", "MAX_NUM_FRAMES",
           "MAX_IMAGE_SIZE", "MAX_OUTPUT_BYTES", "BACKENDS", "DOWNMIXES",
           "qwen_video", "qwen_audio_features", "qwen_frame_indices", "qwen_smart_resize",
           "resize_bicubic_antialias"]

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


_NATIVE_OPTION_TYPES = dict(num_frames=int, image_size=int, aspect=str, mean=tuple, std=tuple,
                           n_mels=int, audio=bool, require_audio=bool, max_dimension=int,
                           decoder_threads=int, downmix=str, max_num_frames=int,
                           max_image_size=int, max_output_bytes=int)


def _native_options(**options) -> dict:
    """The clip options as the extension's keyword arguments (rust/python.rs ``clip_options``)."""
    return {k: _NATIVE_OPTION_TYPES[k](v) for k, v in options.items()}


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
        from r1omni_fast.media import pyav

        return pyav.load_clip(path, num_frames=num_frames, image_size=image_size,
                                    aspect=aspect, mean=mean, std=std, n_mels=n_mels, audio=audio,
                                    require_audio=require_audio, audio_path=audio_path,
                                    max_dimension=max_dimension, downmix=downmix)
    d = native.media_load_clip(
        path, audio_path=None if audio_path is None else os.fspath(audio_path),
        **_native_options(num_frames=num_frames, image_size=image_size, aspect=aspect, mean=mean,
                          std=std, n_mels=n_mels, audio=audio, require_audio=require_audio,
                          max_dimension=max_dimension, decoder_threads=decoder_threads,
                          downmix=downmix, max_num_frames=max_num_frames,
                          max_image_size=max_image_size, max_output_bytes=max_output_bytes))
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
        from r1omni_fast.media import pyav

        return pyav.load_batch(paths, num_frames=num_frames, image_size=image_size,
                                     aspect=aspect, mean=mean, std=std, n_mels=n_mels,
                                     audio=audio, require_audio=require_audio,
                                     max_dimension=max_dimension, downmix=downmix)
    items = native.media_load_batch(paths, 0 if threads is None else int(threads),
                                    **_native_options(**{k: v for k, v in same.items()
                                                         if k != "backend"}))
    return [item if isinstance(item, MediaError) else _clip(item) for item in items]


def decode_frames(path, indices: Sequence[int], *, max_dimension: int = DEFAULT_MAX_DIMENSION,
                  decoder_threads: int = 0, backend: str = "native") -> np.ndarray:
    """RGB24 frames at presentation ``indices`` as FFmpeg presents them (display matrix
    applied): uint8 (k, H, W, 3), no resize. Raises :class:`MediaError` for a bad input or index."""
    path = os.fspath(path)
    idx = [int(i) for i in indices]
    native = _backend(backend)
    if native is None:
        from r1omni_fast.media import pyav

        return pyav.decode_frames(path, idx, max_dimension=max_dimension)
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
        from r1omni_fast.media import pyav

        return pyav.load_audio(path, downmix=downmix, max_seconds=max_seconds)
    return native.media_load_audio(path, downmix,
                                   None if max_seconds is None else float(max_seconds))


def preprocess_frame(rgb, image_size: int = 224, aspect: str = "pad", *,
                     mean: Sequence[float] = (0.5, 0.5, 0.5),
                     std: Sequence[float] = (0.5, 0.5, 0.5), backend: str = "native") -> np.ndarray:
    """The picture half of the pipeline on one RGB24 picture: uint8 (H, W, 3) -> float32
    (3, S, S). ``aspect="pad"`` pads to a square of grey ``int(mean*255)`` (HumanOmni's
    ``expand2square``); the bicubic resize is bit-exact with Pillow 13's ``Image.resize(...,
    BICUBIC)`` (its pass order included); then ``(x/255 - mean)/std``. Raises ``ValueError`` for a bad shape or option."""
    mean, std = _norm3(mean, "mean"), _norm3(std, "std")
    a = np.ascontiguousarray(np.asarray(rgb))
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or 0 in a.shape:
        raise ValueError(f"rgb must be a non-empty (H, W, 3) uint8 array, got {a.dtype} {a.shape}")
    _check(1, image_size, aspect, 1, 1, std, audio=False)
    native = _backend(backend)
    if native is None:
        from r1omni_fast.media import pyav

        return pyav.preprocess_frame(a, int(image_size), aspect, mean, std)
    return native.media_preprocess_frame(a, int(image_size), aspect, mean, std)


def whisper_log_mel(samples, n_mels: int = 128, *, backend: str = "native") -> np.ndarray:
    """Whisper log-mel of 16 kHz mono samples: float32 (n_mels, 3000).

    Pad/cut to 30 s; STFT (n_fft 400, hop 160, periodic Hann, centred, reflect padding), power,
    Slaney mel filters 0-8000 Hz, ``log10(max(m, 1e-10))``, ``max(x, x.max() - 8)``,
    ``(x + 4) / 4``, as ``transformers.WhisperFeatureExtractor(feature_size=n_mels)``. The FFT and
    power are float64: within 1e-5 of a float64 oracle, and within 1e-4 of transformers' default
    float32 path (2e-4 on pure tones, where that path's own round-off shows).
    """
    x = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1))
    if not 1 <= int(n_mels) <= 512:
        raise ValueError(f"n_mels must be between 1 and 512, got {n_mels}")
    native = _backend(backend)
    if native is None:
        from r1omni_fast.media import pyav

        return pyav.whisper_log_mel(x, int(n_mels))
    return native.media_whisper_log_mel(x, int(n_mels))


# --- Qwen2.5-Omni inputs (qwen-omni-utils' video sampling and resize; the processor's audio) ---

QWEN_IMAGE_FACTOR = 28
"""Frame sides are multiples of this (patch 14 x spatial merge 2)."""

QWEN_FRAME_FACTOR = 2
"""Frame counts are multiples of this (the temporal patch)."""

QWEN_VIDEO_MIN_PIXELS = 128 * 28 * 28
"""Default ``min_pixels`` per frame (``VIDEO_MIN_TOKEN_NUM * 28 * 28``)."""

QWEN_VIDEO_MAX_PIXELS = 768 * 28 * 28
"""Largest ``max_pixels`` per frame (``VIDEO_MAX_TOKEN_NUM * 28 * 28``)."""

QWEN_VIDEO_TOTAL_PIXELS = 128000 * 28 * 28 * 0.9
"""Default ``total_pixels`` of a clip (``MODEL_SEQ_LEN * 28 * 28 * 0.9`` with the utilities'
default ``MODEL_SEQ_LEN`` of 128000): the frames' pixels over ``QWEN_FRAME_FACTOR``."""

QWEN_AUDIO_SECONDS = 300
"""Qwen2.5-Omni's feature extractor pads and cuts audio to 300 s (``chunk_length``)."""

_MAX_RATIO = 200


def _round_by(x, f):
    return round(x / f) * f


def _ceil_by(x, f):
    import math

    return math.ceil(x / f) * f


def _floor_by(x, f):
    import math

    return math.floor(x / f) * f


def qwen_smart_resize(height: int, width: int, *, factor: int = QWEN_IMAGE_FACTOR,
                      min_pixels: float = 4 * 28 * 28,
                      max_pixels: float = 16384 * 28 * 28) -> tuple:
    """``(h, w)`` as qwen-omni-utils' ``smart_resize``: both multiples of ``factor``, the aspect
    ratio kept as closely as possible, ``h * w`` within ``[min_pixels, max_pixels]`` (up to
    the rounding to ``factor``). Raises ``ValueError`` for an aspect ratio over 200 or
    ``max_pixels < min_pixels``."""
    import math

    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels={max_pixels} is below min_pixels={min_pixels}")
    if min(height, width) < 1:
        raise ValueError(f"picture size {width}x{height} is empty")
    if max(height, width) / min(height, width) > _MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {_MAX_RATIO}, got "
                         f"{max(height, width) / min(height, width)}")
    h_bar = max(factor, _round_by(height, factor))
    w_bar = max(factor, _round_by(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = _floor_by(height / beta, factor)
        w_bar = _floor_by(width / beta, factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_by(height * beta, factor)
        w_bar = _ceil_by(width * beta, factor)
    return int(h_bar), int(w_bar)


def _linspace_f32(start: int, end: int, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` (float32, torch's CPU kernel): ``start + step * i``
    for the first half, ``end - step * (steps - 1 - i)`` for the rest, each a fused
    multiply-add of the float32 ``step`` (exact in float64, then rounded once)."""
    i = np.arange(steps, dtype=np.float64)
    if steps == 1:
        return np.array([start], np.float32)
    s, e = np.float32(start), np.float32(end)
    step = np.float64(np.float32((e - s) / np.float32(steps - 1)))
    half = steps // 2
    lo = (step * i[:half] + np.float64(s)).astype(np.float32)
    hi = (np.float64(e) - step * (steps - 1 - i[half:])).astype(np.float32)
    return np.concatenate([lo, hi])


def qwen_frame_indices(total_frames: int, video_fps: float, *, fps: Optional[float] = 2.0,
                       nframes: Optional[int] = None, min_frames: int = 4,
                       max_frames: Optional[int] = None, video_start: Optional[float] = None,
                       video_end: Optional[float] = None) -> tuple:
    """Which frames qwen-omni-utils samples (its torchcodec/decord readers): ``(indices, sample_fps)``.

    The range ``video_start``..``video_end`` (seconds) becomes frames ``ceil(start * fps)`` ..
    ``floor(end * fps)``; the count is ``nframes`` rounded to an even number, or
    ``count / video_fps * fps`` clamped to ``[min_frames, max_frames]`` (both rounded to even
    numbers; ``max_frames`` defaults to ``min(768, count)``) and to the range, then floored to
    an even number; indices are ``round(torch.linspace(first, last, n))`` (half to even);
    ``sample_fps = n / count * video_fps``. Raises ``ValueError`` when fewer than 2 frames
    (or more than the range) would be sampled, or the range is empty."""
    import math

    if not video_fps > 0:
        raise ValueError(f"video_fps must be positive, got {video_fps}")
    if total_frames <= 0:
        raise ValueError(f"total_frames must be positive, got {total_frames}")
    first, last, count = 0, total_frames - 1, total_frames
    if video_start is not None or video_end is not None:
        duration = total_frames / video_fps
        if video_start is not None:
            first = math.ceil(max(0.0, min(video_start, duration)) * video_fps)
        if video_end is not None:
            last = min(math.floor(max(0.0, min(video_end, duration)) * video_fps), total_frames - 1)
        if first >= last:
            raise ValueError(f"the time range {video_start}..{video_end} s holds no frames "
                             f"(frames {first}..{last} of {total_frames} at {video_fps} fps)")
        count = last - first + 1
    if nframes is not None:
        n = _round_by(nframes, QWEN_FRAME_FACTOR)
    else:
        lo = _ceil_by(min_frames, QWEN_FRAME_FACTOR)
        hi = _floor_by(min(768, count) if max_frames is None else max_frames, QWEN_FRAME_FACTOR)
        n = count / video_fps * (2.0 if fps is None else fps)
        n = _floor_by(min(min(max(n, lo), hi), count), QWEN_FRAME_FACTOR)
    if not QWEN_FRAME_FACTOR <= n <= count:
        raise ValueError(f"the number of frames to sample must be in [{QWEN_FRAME_FACTOR}, "
                         f"{count}], got {n}")
    n = int(n)
    idx = np.rint(_linspace_f32(first, last, n)).astype(np.int64)
    return idx, n / max(count, 1e-6) * video_fps


def qwen_video(path, *, fps: float = 2.0, nframes: Optional[int] = None, min_frames: int = 4,
               max_frames: Optional[int] = None, min_pixels: float = QWEN_VIDEO_MIN_PIXELS,
               max_pixels: Optional[float] = None,
               total_pixels: float = QWEN_VIDEO_TOTAL_PIXELS,
               video_start: Optional[float] = None, video_end: Optional[float] = None,
               max_dimension: int = DEFAULT_MAX_DIMENSION,
               decoder_threads: int = 0, factor: int = QWEN_IMAGE_FACTOR) -> tuple:
    """A clip's frames as Qwen2.5-Omni's utilities give them (``qwen_omni_utils.fetch_video``).

    Returns ``(frames, sample_fps)``: ``frames`` uint8 ``(T, H, W, 3)`` RGB, ``T`` even, ``H``
    and ``W`` multiples of ``factor`` (28: patch 14 x merge 2, Qwen2.5-Omni; 32: patch 16 x
    merge 2, Qwen3-Omni); ``sample_fps`` (float) the rate the frames were sampled at, the
    processor's ``fps``. The same values as the utilities' float tensor
    ``(T, 3, H, W)`` transposed, which holds whole numbers.

    - Frames: those FFmpeg presents (``Clip.num_video_frames``) at the stream's average frame
      rate; picked by :func:`qwen_frame_indices` (``fps``/``nframes``, ``min_frames``,
      ``max_frames``, ``video_start``/``video_end`` in seconds), upright (display matrix applied).
    - Size: ``qwen_smart_resize`` (``factor``) of the first frame's size with ``min_pixels`` and
      ``max_pixels = max(min(768*factor*factor, total_pixels / T * 2), int(min_pixels * 1.05))``,
      lowered to the ``max_pixels`` given.
    - Resize: torchvision's ``resize(uint8 tensor, (H, W), BICUBIC, antialias=True)``,
      reproduced operation for operation (float32 taps and sums, clamp, round half to even):
      equal to PyTorch's x86-64 CPU result (see rust/media/qwen.rs).

    Raises :class:`MediaError` naming the file for an undecodable input, a clip too short to
    sample 2 frames, or frames beyond the pixel budget (``T / 2 * H * W > total_pixels``, which
    the per-frame ``min_pixels`` floor can force when ``total_pixels`` is small: lower
    ``min_pixels``, ``fps`` or ``max_frames``, or raise ``total_pixels``); ``ValueError`` for
    options out of range; ``ImportError`` when the native extension is missing.
    """
    native = _backend("native")
    path = os.fspath(path)
    if not min_pixels > 0 or not total_pixels > 0:
        raise ValueError(f"min_pixels and total_pixels must be positive, got {min_pixels}, "
                         f"{total_pixels}")
    if max_pixels is not None and not max_pixels >= min_pixels:
        raise ValueError(f"max_pixels must be at least min_pixels={min_pixels:g}, got "
                         f"{max_pixels}")
    if nframes is None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    info = native.media_probe_video(path, int(max_dimension))
    try:
        idx, sample_fps = qwen_frame_indices(info["num_frames"], info["fps"], fps=fps,
                                             nframes=nframes, min_frames=min_frames,
                                             max_frames=max_frames, video_start=video_start,
                                             video_end=video_end)
    except ValueError as exc:
        raise MediaError(path, f"{exc} ({info['num_frames']} frames at {info['fps']:.3f} fps)") \
            from None
    t = len(idx)
    cap = QWEN_VIDEO_MAX_PIXELS if factor == QWEN_IMAGE_FACTOR else 768 * factor * factor
    budget = max(min(cap, total_pixels / t * QWEN_FRAME_FACTOR),
                 int(min_pixels * 1.05))
    if max_pixels is not None:
        budget = min(max_pixels, budget)
    try:
        h, w = qwen_smart_resize(info["height"], info["width"], factor=factor, min_pixels=min_pixels,
                                 max_pixels=budget)
    except ValueError as exc:
        raise MediaError(path, str(exc)) from None
    if t / QWEN_FRAME_FACTOR * h * w > total_pixels:
        raise MediaError(path, f"{t} frames of {w}x{h} are {t * h * w} pixels, over the budget "
                         f"total_pixels={total_pixels:g} x {QWEN_FRAME_FACTOR} (min_pixels="
                         f"{min_pixels:g} per frame): lower min_pixels, fps or max_frames, or "
                         f"raise total_pixels")
    frames = native.media_decode_resized(path, [int(i) for i in idx], int(h), int(w),
                                         int(max_dimension), int(decoder_threads))
    return frames, float(sample_fps)


def resize_bicubic_antialias(frames, height: int, width: int) -> np.ndarray:
    """uint8 ``(k, H, W, 3)`` (or one ``(H, W, 3)``) RGB -> uint8 ``(k, height, width, 3)``,
    as torchvision's ``resize(uint8 tensor, (height, width), BICUBIC, antialias=True)`` (see
    :func:`qwen_video`). Raises ``ValueError`` for a bad shape or size."""
    a = np.ascontiguousarray(np.asarray(frames))
    single = a.ndim == 3
    if single:
        a = a[None]
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[3] != 3 or 0 in a.shape:
        raise ValueError(f"frames must be a non-empty (k, H, W, 3) uint8 array, got {a.dtype} "
                         f"{a.shape}")
    if not (1 <= int(height) <= MAX_IMAGE_SIZE and 1 <= int(width) <= MAX_IMAGE_SIZE):
        raise ValueError(f"height and width must be between 1 and {MAX_IMAGE_SIZE}, got "
                         f"{height}x{width}")
    out = _backend("native").media_resize_bicubic_antialias(a, int(height), int(width))
    return out[0] if single else out


def qwen_audio_features(audio, *, n_mels: int = 128, sampling_rate: int = 16000,
                        start: float = 0.0, end: Optional[float] = None,
                        max_seconds: float = QWEN_AUDIO_SECONDS, downmix: str = "mean",
                        pad: bool = False) -> tuple:
    """Whisper log-mel features as Qwen2.5-Omni's processor makes them, without the padding.

    ``audio``: 16 kHz mono float samples (1-D array) or a media file path (its first audio
    stream, decoded, downmixed with ``downmix`` — "mean", as librosa's mono in qwen-omni-utils,
    or "ffmpeg" — and resampled to 16 kHz). ``start``/``end`` (seconds) keep
    ``samples[int(16000 * start):int(16000 * end)]``, as qwen-omni-utils' ``audio_start`` /
    ``audio_end``.

    The processor calls ``WhisperFeatureExtractor(feature_size=128, chunk_length=300)`` with
    ``padding="max_length"`` and ``return_attention_mask=True``: features ``(128, 30000)`` of
    the signal zero-padded (cut) to ``max_seconds`` = 300 s and a mask of
    ``L = ceil(n / 160)`` ones; the model keeps the ``L`` masked-in frames. This returns
    ``(features, attention_mask)``: float32 ``(n_mels, L)`` equal to those ``L`` frames (the
    clamp's maximum taken over the whole padded signal, as there) and int32 ``(L,)`` ones; with
    ``pad=True``, the processor's padded ``(n_mels, max_seconds * 100)`` and its mask. The
    encoder's token count is ``((L - 1) // 2 + 1 - 2) // 2 + 1``.

    Raises :class:`MediaError` for a file that cannot be decoded or has no audio stream,
    ``ValueError`` for an empty signal, a rate other than 16000 or options out of range.
    """
    import math

    if int(sampling_rate) != 16000:
        raise ValueError(f"sampling_rate must be 16000 (the extractor's), got {sampling_rate}; "
                         f"resample first or pass a file path")
    if not 1 <= int(n_mels) <= 512:
        raise ValueError(f"n_mels must be between 1 and 512, got {n_mels}")
    if not (max_seconds > 0 and float(max_seconds * 100).is_integer()):
        raise ValueError(f"max_seconds must be a positive multiple of 0.01, got {max_seconds}")
    if start < 0 or (end is not None and end <= start):
        raise ValueError(f"need 0 <= start < end, got start={start}, end={end}")
    if isinstance(audio, (str, os.PathLike)):
        path = os.fspath(audio)
        keep = (end if end is not None else start + max_seconds) + 1.0
        x = load_audio(path, downmix=downmix, max_seconds=keep)
        if x is None:
            raise MediaError(path, "no audio stream (audio features were asked for)")
    else:
        x = np.asarray(audio)
        if x.ndim != 1:
            raise ValueError(f"audio samples must be 1-D (mono), got shape {x.shape}")
        x = x.astype(np.float32, copy=False)
    x = np.ascontiguousarray(x[int(16000 * start):None if end is None else int(16000 * end)])
    if x.size == 0:
        raise ValueError("the audio is empty (no samples in the range asked for)")
    n_samples = int(round(max_seconds * 16000))
    n = min(x.size, n_samples)
    valid = math.ceil(n / 160)
    total = n_samples // 160
    frames = total if pad else min(total, math.ceil((n + 200) / 160))
    mel = _backend("native").media_log_mel(x[:n], int(n_mels), n_samples, frames)
    if pad:
        mask = np.zeros(total, np.int32)
        mask[:valid] = 1
        return mel, mask
    return np.ascontiguousarray(mel[:, :valid]), np.ones(valid, np.int32)
