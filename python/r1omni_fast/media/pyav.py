"""PyAV + PIL + numpy implementation of the ``r1omni_fast.media`` surface.

The slow, obviously-correct reference for the native decoder (tests compare the two), used by
``r1omni_fast.media`` only when asked for with ``backend="pyav"``. Same contract (DESIGN.md §2):

- N = number of packets of the first video stream (not an attached picture) that are not
  flagged discarded (``Packet.is_discard``: an MP4 edit list keeps them only as references);
  the declared count is a hint; a packet flagged corrupt or a read error is a truncated file.
- frame i of the clip is the i-th picture the decoder outputs (presentation order), turned
  upright by the display matrix of its side data as FFmpeg 5.1's command line does
  (:func:`orientation`).
- indices: ``floor((N-1)/k * (i+0.5) + 1e-6 + 0.5)``.
- pictures: RGB24 at full size (``to_ndarray(format="rgb24")``), then HumanOmni ``expand2square``
  with ``int(mean*255)`` for ``aspect="pad"``, PIL BICUBIC resize, ``(x/255 - mean)/std``.
- audio: first audio stream, mono by FFmpeg's channel matrix (PyAV's ``AudioResampler`` to
  mono at the same rate) or the channel mean, swresample to 16 kHz float32, non-finite -> 0;
  a clip decodes the first 30 s only.
- log-mel: ``transformers.WhisperFeatureExtractor(feature_size=n_mels)``.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from r1omni_fast.media.types import Clip, MediaError

TARGET_RATE = 16_000
DEFAULT_MAX_DIMENSION = 8192
CLIP_AUDIO_SECONDS = 30.0  # what the Whisper features use


def _error(path, reason):
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
    """(container, stream, packets, presented) of the first video stream, read in one pass:
    every packet (to decode) and those not flagged discarded (the frames)."""
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
    presented = [p for p in packets if not p.is_discard]
    if not presented:
        c.close()
        raise _error(path, "video stream has no packets")
    if corrupt:
        c.close()
        raise _error(path, f"truncated or corrupt file: reading stopped with an error after "
                           f"{len(presented)} video frames (the container declares {declared})")
    return c, s, packets, presented


def orientation(matrix) -> tuple[bool, bool, bool]:
    """(transpose, flip_x, flip_y) for a display matrix (9 int32), as FFmpeg 5.1's command line
    turns pictures upright: theta = ``-round(av_display_rotation_get(m))`` mod 360; 90:
    ``cclock_flip`` if m[3] > 0 else ``clock``; 180: ``hflip`` if m[0] < 0, ``vflip`` if
    m[4] < 0; 270: ``clock_flip`` if m[3] < 0 else ``cclock``; 0: ``vflip`` if m[4] < 0; other
    angles unchanged. The transpose comes first, then the flips of the result."""
    if matrix is None:
        return (False, False, False)
    m = [int(v) for v in matrix]
    fp = [v / 65536.0 for v in m]
    s0, s1 = math.hypot(fp[0], fp[3]), math.hypot(fp[1], fp[4])
    if s0 == 0 or s1 == 0:
        return (False, False, False)
    rotation = -math.degrees(math.atan2(fp[1] / s1, fp[0] / s0))
    theta = -float(round_half_away(rotation))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return (True, False, False) if m[3] > 0 else (True, True, False)
    if abs(theta - 180) < 1:
        return (False, m[0] < 0, m[4] < 0)
    if abs(theta - 270) < 1:
        return (True, True, True) if m[3] < 0 else (True, False, True)
    if abs(theta) < 1:
        return (False, False, m[4] < 0)
    return (False, False, False)


def round_half_away(x: float) -> float:
    """C's ``round``: halves away from zero."""
    return math.copysign(math.floor(abs(x) + 0.5), x)


def apply_orientation(rgb: np.ndarray, o) -> np.ndarray:
    """(H, W, 3) picture under ``(transpose, flip_x, flip_y)``."""
    transpose, flip_x, flip_y = o
    if transpose:
        rgb = rgb.transpose(1, 0, 2)
    if flip_x:
        rgb = rgb[:, ::-1]
    if flip_y:
        rgb = rgb[::-1]
    return np.ascontiguousarray(rgb)


def _display_matrix(frame):
    import av

    side_data = frame.side_data
    # PyAV 18 made the container a mapping (type -> side data); earlier ones iterate the side data.
    for sd in side_data.values() if hasattr(side_data, "values") else side_data:
        if sd.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            return np.frombuffer(bytes(sd), dtype=np.int32)[:9]
    return None


def stream_fps(stream, packets) -> float:
    """The average rate, else the base rate, else (N-1)/span of the presented timestamps, else
    N / their total duration, else NaN (never 0)."""
    for r in (stream.average_rate, stream.base_rate):
        if r is not None and r.numerator > 0 and r.denominator > 0:
            return float(r)
    tb = float(stream.time_base) if stream.time_base else 0.0
    pts = [p.pts for p in packets if p.pts is not None]
    if len(pts) == len(packets) > 1:
        span = (max(pts) - min(pts)) * tb
        if span > 0 and math.isfinite(span):
            return (len(packets) - 1) / span
    total = sum(max(p.duration or 0, 0) for p in packets) * tb
    if total > 0 and math.isfinite(total):
        return len(packets) / total
    return float("nan")


def video_frame_count(path, *, max_dimension: int = DEFAULT_MAX_DIMENSION) -> int:
    """Frame count N: the presented (not discarded) packets of the first video stream."""
    c, _, _, presented = _video_packets(path, max_dimension)
    c.close()
    return len(presented)


def decode_frames(path, indices: Sequence[int], *, max_dimension: int = DEFAULT_MAX_DIMENSION,
                  decoder_threads: int = 0) -> np.ndarray:
    """RGB24 frames (k, H, W, 3) uint8 at presentation indices, decoding every picture, each
    turned upright by its display matrix."""
    del decoder_threads  # the reference decodes single-threaded, in order
    path = os.fspath(path)
    idx = [int(i) for i in indices]
    c, s, packets, presented = _video_packets(path, max_dimension)
    n = len(presented)
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
                    got[count] = apply_orientation(f.to_ndarray(format="rgb24"),
                                                   orientation(_display_matrix(f)))
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


def load_audio(path, *, downmix: str = "ffmpeg", max_seconds=None) -> np.ndarray | None:
    """First audio stream as 16 kHz mono float32 (downmix, then swresample); None if absent.
    ``max_seconds`` keeps the first seconds only (see :func:`load_audio_seconds`)."""
    got = load_audio_seconds(path, downmix=downmix, max_seconds=max_seconds)
    return None if got is None else got[0]


def load_audio_seconds(path, *, downmix: str = "ffmpeg", max_seconds=None):
    """(16 kHz mono float32, length in seconds) of the first audio stream, or None.

    Mono: ``downmix="ffmpeg"`` resamples each frame to mono at its own rate with PyAV's
    ``AudioResampler`` (swresample's channel matrix); ``"mean"`` averages the channels. With
    ``max_seconds``, decoding stops once the mono samples cover ``max_seconds + 1`` s, the
    16 kHz result is cut to ``max_seconds``, and the length comes from the packets' timestamps
    (last pts + duration - first pts); otherwise it is ``len / 16000``."""
    import av

    path = os.fspath(path)
    c = _open(path)
    stopped = False
    try:
        s = _first(c, "audio")
        if s is None:
            return None
        chunks, rate, have = [], None, 0
        ctx = s.codec_context
        packets = [p for p in c.demux(s) if p.size]
        tb = float(s.time_base) if s.time_base else 0.0
        ends = [(p.pts, p.pts + max(p.duration or 0, 0)) for p in packets if p.pts is not None]
        remix = None
        for p in packets + [None]:
            try:
                frames = ctx.decode(p)
            except Exception:
                frames = []
            for f in frames:
                if rate is None:
                    rate = f.sample_rate
                elif f.sample_rate != rate:
                    raise _error(path, f"sample rate changes mid-stream ({rate} -> "
                                       f"{f.sample_rate} Hz)")
                if downmix == "ffmpeg":
                    if remix is None:
                        remix = av.AudioResampler(format="flt", layout="mono", rate=rate)
                    mono = np.concatenate([o.to_ndarray().reshape(-1) for o in remix.resample(f)]
                                          or [np.zeros(0, np.float32)])
                else:
                    a = f.to_ndarray()
                    if not f.format.is_planar:
                        a = a.reshape(-1, len(f.layout.channels)).T
                    mono = _to_float(a).mean(axis=0, dtype=np.float32)
                chunks.append(mono.astype(np.float32))
                have += len(mono)
            if max_seconds is not None and rate and have >= (max_seconds + 1) * rate:
                stopped = True
                break
    except av.error.FFmpegError as e:
        raise _error(path, f"audio decoding failed: {e}") from None
    finally:
        c.close()
    if not chunks or have == 0:
        raise _error(path, "audio stream decodes to no samples")
    mono = np.concatenate(chunks).astype(np.float32)
    mono[~np.isfinite(mono)] = 0.0
    out = resample_to_16k(mono, rate)
    seconds = len(out) / TARGET_RATE
    if max_seconds is not None:
        out = out[:int(math.ceil(max_seconds * TARGET_RATE))]
        if stopped:
            span = (max(e for _, e in ends) - min(b for b, _ in ends)) * tb if ends else 0.0
            if span > 0 and math.isfinite(span):
                seconds = max(span, seconds)
    return out, seconds


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
              max_dimension: int = DEFAULT_MAX_DIMENSION, decoder_threads: int = 0,
              downmix: str = "ffmpeg") -> "Clip":
    """The HumanOmni pipeline in PyAV + PIL + transformers (see the module docstring)."""

    path = os.fspath(path)
    c, s, _, presented = _video_packets(path, max_dimension)
    fps = stream_fps(s, presented)
    declared = max(int(s.frames or 0), 0)
    c.close()
    n = len(presented)
    indices = uniform_indices(n, num_frames)
    rgb = decode_frames(path, indices, max_dimension=max_dimension)
    frames = np.stack([preprocess_frame(f, image_size, aspect, mean, std) for f in rgb])
    mel, has_audio, seconds = None, False, 0.0
    if audio:
        source = os.fspath(audio_path) if audio_path is not None else path
        got = load_audio_seconds(source, downmix=downmix, max_seconds=CLIP_AUDIO_SECONDS)
        if got is None and require_audio:
            raise _error(source, "no audio stream (require_audio=True)")
        has_audio = got is not None
        samples, seconds = got if got is not None else (np.zeros(0, np.float32), 0.0)
        mel = whisper_log_mel(samples, n_mels)
    return Clip(frames=frames, frame_indices=np.asarray(indices, np.int64), num_video_frames=n,
                declared_frames=declared, fps=fps, mel=mel, has_audio=has_audio,
                audio_seconds=seconds)


def load_batch(paths, *, threads=None, **options) -> list:
    """``load_clip`` per path, in order; a failed item becomes its ``MediaError``."""
    out = []
    for p in paths:
        try:
            out.append(load_clip(p, **options))
        except MediaError as e:
            out.append(e)
    return out
