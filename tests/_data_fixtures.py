"""Helpers for the data tests: a small synthetic dataset and a PyAV clip loader.

``pyav_load_batch`` has the signature of ``r1omni_fast.media.load_batch`` and really decodes the
files with PyAV + numpy (HumanOmni frame sampling, PIL bicubic resize, a log-power spectrogram
pooled to ``n_mels`` bands), so the collator is tested on real pixels and real errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np


class LoadError(Exception):
    """Per-item failure, shaped like r1omni_fast.media.MediaError (path, reason)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class PyAVClip:
    frames: np.ndarray
    frame_indices: np.ndarray
    num_video_frames: int
    fps: float
    mel: Optional[np.ndarray]
    has_audio: bool
    audio_seconds: float


def humanomni_indices(num_video_frames: int, k: int) -> np.ndarray:
    """HumanOmni "v1" sampling: seg = (N-1)/k, frame i = floor(seg*(i+0.5) + 1e-6 + 0.5)."""
    seg = (num_video_frames - 1) / k
    return np.array([math.floor(seg * (i + 0.5) + 1e-6 + 0.5) for i in range(k)], dtype=np.int64)


def decode_rgb(path: str) -> np.ndarray:
    import av

    with av.open(path) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_audio_16k(path: str) -> Optional[np.ndarray]:
    import av

    with av.open(path) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        chunks = []
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _spectrogram(samples: np.ndarray, n_mels: int) -> np.ndarray:
    """(n_mels, 3000) log10 power of a centred 400/160 Hann STFT over 30 s, pooled into n_mels bands."""
    padded = np.zeros(480000, np.float32)
    padded[: min(len(samples), 480000)] = samples[:480000]
    centred = np.pad(padded, 200, mode="reflect")  # 3001 windows; the last is dropped
    frames = np.lib.stride_tricks.sliding_window_view(centred, 400)[::160][:3000]
    power = np.abs(np.fft.rfft(frames * np.hanning(400), axis=1)) ** 2  # (3000, 201)
    bands = np.array_split(np.arange(power.shape[1]), n_mels)
    pooled = np.stack([power[:, b].mean(axis=1) for b in bands])
    return np.log10(np.maximum(pooled, 1e-10)).astype(np.float32)


def _resize(rgb: np.ndarray, size: int, aspect: str) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(rgb)
    if aspect == "pad" and img.width != img.height:
        side = max(img.width, img.height)
        canvas = Image.new("RGB", (side, side), (127, 127, 127))
        canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        img = canvas
    return np.asarray(img.resize((size, size), Image.BICUBIC))


def pyav_load_batch(paths: Sequence[str], *, num_frames: int = 8, image_size: int = 224,
                    aspect: str = "pad", n_mels: int = 128, audio: bool = True,
                    audio_paths: Optional[Sequence[Optional[str]]] = None,
                    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> List[object]:
    out: List[object] = []
    for i, path in enumerate(paths):
        try:
            rgb = decode_rgb(path)
            if len(rgb) == 0:
                raise ValueError("no video frames")
            idx = humanomni_indices(len(rgb), num_frames)
            frames = np.stack([_resize(rgb[j], image_size, aspect) for j in idx]).astype(np.float32)
            frames = (frames / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
            mel, has_audio, seconds = None, False, 0.0
            if audio:
                source = audio_paths[i] if audio_paths is not None and audio_paths[i] else path
                samples = decode_audio_16k(source)
                has_audio = samples is not None
                samples = samples if samples is not None else np.zeros(0, np.float32)
                seconds = len(samples) / 16000
                mel = _spectrogram(samples, n_mels)
            out.append(PyAVClip(frames.transpose(0, 3, 1, 2).copy(), idx, len(rgb), 8.0, mel,
                                has_audio, seconds))
        except Exception as exc:  # noqa: BLE001 - every decoder failure becomes a per-item error
            out.append(LoadError(str(path), str(exc) or type(exc).__name__))
    return out


def make_synth(root, n: int = 16, seed: int = 0, **kw):
    from r1omni_fast.data.synthetic import generate

    return generate(root, n=n, seed=seed, **kw)
