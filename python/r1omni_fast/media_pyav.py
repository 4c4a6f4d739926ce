"""PyAV + PIL + numpy implementation of the ``r1omni_fast.media`` surface.

The slow, obviously-correct reference for the native decoder (tests compare the two) and the
fallback when the native extension is missing. Same contract (DESIGN.md §2):

- N = number of packets of the first video stream (not an attached picture); a container that
  declares more frames than can be read, or a packet flagged corrupt, is a truncated file.
- frame i of the clip is the i-th picture the decoder outputs (presentation order).
- indices: ``floor((N-1)/k * (i+0.5) + 1e-6 + 0.5)``.
- pictures: RGB24 at full size (``to_ndarray(format="rgb24")``), then HumanOmni ``expand2square``
  with ``int(mean*255)`` for ``aspect="pad"``, PIL BICUBIC resize, ``(x/255 - mean)/std``.
- audio: first audio stream, mean of channels, swresample to 16 kHz float32, non-finite -> 0.
- log-mel: ``transformers.WhisperFeatureExtractor(feature_size=n_mels)``.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from r1omni_fast.media import Clip

TARGET_RATE = 16_000
DEFAULT_MAX_DIMENSION = 8192


def _error(path, reason):
    from r1omni_fast.media import MediaError

    return MediaError(str(path), reason)


def uniform_indices(n: int, k: int) -> list[int]:
    """HumanOmni "v1": ``seg = (n-1)/k``; frame i = ``floor(seg*(i+0.5) + 1e-6 + 0.5)``."""
    if n <= 0:
        return []
    seg = (n - 1) / k
    return [min(int(math.floor(seg * (i + 0.5) + 1e-6 + 0.5)), n - 1) for i in range(k)]


def _open(path):
    import av

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise _error(p, "cannot read file: no such regular file")
    if os.path.getsize(p) == 0:
        raise _error(p, "empty file")
    try:
        return av.open(p)
    except Exception as e:  # av.error.* and OSError alike
        raise _error(p, f"not a readable media file: {e}") from None


def _first(container, kind):
    import av

    streams = container.streams.video if kind == "video" else container.streams.audio
    for s in streams:
        if not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    return None


def _check_dims(path, w, h, max_dimension):
    if w <= 0 or h <= 0:
        raise _error(path, f"invalid picture size {w}x{h}")
    if w > max_dimension or h > max_dimension:
        raise _error(path, f"picture size {w}x{h} exceeds the dimension limit {max_dimension}")


def _video_packets(path, max_dimension):
    """(container, stream, packets) of the first video stream, read in one pass."""
    c = _open(path)
    if c.format.name.endswith("_pipe") or c.format.name == "image2":
        c.close()
        raise _error(path, f"a still image ({c.format.name}), not a video")
    s = _first(c, "video")
    if s is None:
        c.close()
        raise _error(path, "no video stream")
    _check_dims(path, s.codec_context.width, s.codec_context.height, max_dimension)
    packets, corrupt = [], False
    try:
        for p in c.demux(s):
            if p.size == 0:
                continue
            corrupt |= bool(p.is_corrupt)
            packets.append(p)
    except Exception:
        corrupt = True
    declared = s.frames
    if not packets:
        c.close()
        raise _error(path, "video stream has no packets")
    if corrupt or (declared > 0 and len(packets) < declared):
        c.close()
        raise _error(path, f"truncated or corrupt file: the container declares {declared} video "
                           f"frames, {len(packets)} could be read")
    return c, s, packets


def video_frame_count(path, *, max_dimension: int = DEFAULT_MAX_DIMENSION) -> int:
    """Exact frame count N: packets of the first video stream."""
    c, _, packets = _video_packets(path, max_dimension)
    c.close()
    return len(packets)


def decode_frames(path, indices: Sequence[int], *, max_dimension: int = DEFAULT_MAX_DIMENSION,
                  decoder_threads: int = 0) -> np.ndarray:
    """RGB24 frames (k, H, W, 3) uint8 at presentation indices, decoding every picture."""
    del decoder_threads  # the reference decodes single-threaded, in order
    path = os.fspath(path)
    idx = [int(i) for i in indices]
    c, s, packets = _video_packets(path, max_dimension)
    n = len(packets)
    for i in idx:
        if i < 0:
            raise _error(path, f"frame index {i} is negative")
        if i >= n:
            raise _error(path, f"frame index {i} out of range: the video has {n} frames")
    wanted = set(idx)
    got: dict[int, np.ndarray] = {}
    try:
        ctx = s.codec_context
        count = 0
        for p in packets + [None]:
            try:
                frames = ctx.decode(p)
            except Exception:
                frames = []
            for f in frames:
                if count in wanted:
                    _check_dims(path, f.width, f.height, max_dimension)
                    got[count] = f.to_ndarray(format="rgb24")
                count += 1
            if idx and count > max(idx):
                break
    finally:
        c.close()
    missing = [i for i in idx if i not in got]
    if missing:
        raise _error(path, f"frame {missing[0]} could not be decoded (corrupt stream)")
    if not idx:
        return np.zeros((0, 0, 0, 3), np.uint8)
    shapes = {got[i].shape for i in idx}
    if len(shapes) != 1:
        raise _error(path, "the requested frames differ in size")
    return np.stack([got[i] for i in idx])


def expand2square(img, fill):
    """HumanOmni's pad-to-square: the picture centred on a ``fill`` canvas."""
    from PIL import Image

    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), fill)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def preprocess_frame(rgb: np.ndarray, image_size: int, aspect: str, mean, std) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, S, S) float32: pad (or not), PIL BICUBIC resize, normalise."""
    from PIL import Image

    img = Image.fromarray(rgb)
    if aspect == "pad":
        img = expand2square(img, tuple(int(m * 255) for m in mean))
    elif aspect != "resize":
        raise ValueError(f'aspect must be "pad" or "resize", got {aspect!r}')
    img = img.resize((image_size, image_size), Image.BICUBIC)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def load_audio(path) -> np.ndarray | None:
    """First audio stream as 16 kHz mono float32 (channel mean, then swresample); None if absent."""
    import av

    path = os.fspath(path)
    c = _open(path)
    try:
        s = _first(c, "audio")
        if s is None:
            return None
        chunks, rate = [], None
        ctx = s.codec_context
        for p in list(c.demux(s)) + [None]:
            if p is not None and p.size == 0:
                continue
            try:
                frames = ctx.decode(p)
            except Exception:
                frames = []
            for f in frames:
                if rate is None:
                    rate = f.sample_rate
                elif f.sample_rate != rate:
                    raise _error(path, f"sample rate changes mid-stream ({rate} -> {f.sample_rate} Hz)")
                a = f.to_ndarray()
                if not f.format.is_planar:
                    a = a.reshape(-1, len(f.layout.channels)).T
                chunks.append(_to_float(a).mean(axis=0, dtype=np.float32))
    except av.error.FFmpegError as e:
        raise _error(path, f"audio decoding failed: {e}") from None
    finally:
        c.close()
    if not chunks:
        raise _error(path, "audio stream decodes to no samples")
    mono = np.concatenate(chunks).astype(np.float32)
    mono[~np.isfinite(mono)] = 0.0
    return resample_to_16k(mono, rate)


def _to_float(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.float32 or a.dtype == np.float64:
        return a.astype(np.float32)
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if a.dtype == np.int32:
        return (a.astype(np.float64) / 2147483648.0).astype(np.float32)
    if a.dtype == np.uint8:
        return (a.astype(np.float32) - 128.0) / 128.0
    raise ValueError(f"unsupported sample type {a.dtype}")


def resample_to_16k(mono: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at ``rate`` -> 16 kHz with swresample's defaults (PyAV's AudioResampler)."""
    import av

    if rate == TARGET_RATE:
        return mono.astype(np.float32)
    frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=TARGET_RATE)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame) + resampler.resample(None)]
    res = np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
    res[~np.isfinite(res)] = 0.0
    return res


_EXTRACTORS: dict[int, object] = {}


def whisper_log_mel(samples, n_mels: int = 128) -> np.ndarray:
    """``transformers.WhisperFeatureExtractor(feature_size=n_mels)`` on 16 kHz mono audio."""
    from transformers import WhisperFeatureExtractor

    if n_mels not in _EXTRACTORS:
        _EXTRACTORS[n_mels] = WhisperFeatureExtractor(feature_size=n_mels)
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    x = np.where(np.isfinite(x), x, 0.0).astype(np.float32)
    fe = _EXTRACTORS[n_mels]
    return fe(x, sampling_rate=TARGET_RATE, return_tensors="np")["input_features"][0].astype(np.float32)


def load_clip(path, *, num_frames: int = 8, image_size: int = 224, aspect: str = "pad",
              mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), n_mels: int = 128, audio: bool = True,
              require_audio: bool = False, audio_path=None,
              max_dimension: int = DEFAULT_MAX_DIMENSION, decoder_threads: int = 0) -> "Clip":
    """The HumanOmni pipeline in PyAV + PIL + transformers (see the module docstring)."""
    from r1omni_fast.media import Clip

    path = os.fspath(path)
    c, s, packets = _video_packets(path, max_dimension)
    fps = float(s.average_rate) if s.average_rate else 0.0
    c.close()
    n = len(packets)
    indices = uniform_indices(n, num_frames)
    rgb = decode_frames(path, indices, max_dimension=max_dimension)
    frames = np.stack([preprocess_frame(f, image_size, aspect, mean, std) for f in rgb])
    mel, has_audio, seconds = None, False, 0.0
    if audio:
        source = os.fspath(audio_path) if audio_path is not None else path
        samples = load_audio(source)
        if samples is None and require_audio:
            raise _error(source, "no audio stream (require_audio=True)")
        has_audio = samples is not None
        samples = samples if samples is not None else np.zeros(0, np.float32)
        seconds = len(samples) / TARGET_RATE
        mel = whisper_log_mel(samples, n_mels)
    return Clip(frames=frames, frame_indices=np.asarray(indices, np.int64), num_video_frames=n,
                fps=fps, mel=mel, has_audio=has_audio, audio_seconds=seconds)


def load_batch(paths, *, threads=None, **options) -> list:
    """``load_clip`` per path, in order; a failed item becomes its ``MediaError``."""
    from r1omni_fast.media import MediaError

    out = []
    for p in paths:
        try:
            out.append(load_clip(p, **options))
        except MediaError as e:
            out.append(e)
    return out
