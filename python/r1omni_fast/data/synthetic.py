"""A deterministic, emotion-like synthetic dataset: the default data of the demo and the tests.

Each clip is a short mp4 (H.264 via libx264 when PyAV's FFmpeg has it, else MPEG-4 part 2;
AAC mono 16 kHz) whose label is carried by the picture, by the sound, or by both — chosen per
clip and recorded as the record's ``cue``:

- picture: a face drawn in the class colour with a class-specific mouth and eyebrows (a yellow
  smiling face is happy, a blue frowning one sad, ...); in a sound-only clip the picture is a
  plain dark screen with no face;
- sound: a class-specific voice-like tone (pitch, rhythm, timbre, glide: happy is high quick
  beeps, sad a low soft falling tone, ...); in a picture-only clip the audio track is silent.

Per-clip jitter (face position and size, background shade, pitch) comes from a generator seeded
with ``(seed, clip index)``, so the same seed writes byte-identical files. Written layout::

    OUT/clips/0000.mp4 ...
    OUT/sft.json     cold-start split, gpt value "<think>reasoning about the real cues</think>\\n<answer>sad</answer>"
    OUT/train.json   RL split, gpt value the bare label (GRPO)
    OUT/test.json    held-out split, bare labels (GRPO evaluation / r1omni-fast eval)
    OUT/manifest.json  generator settings and every clip's label, cue, split and drawn parameters

By default the SFT and GRPO splits hold the same clips. ``sft_fraction`` gives R1-Omni's data
regime instead: a small cold-start split with reasoning (the paper: 580 EMER clips) and a larger,
disjoint, label-only RL split (the paper: ~15k MAFW/DFEW clips). The cold-start split covers
every cue so that SFT can learn to say which one it used: sft.json lists its clips round-robin
over the classes (the first ``k * len(labels)`` records are ``k`` clips of each class) and the
j-th record's cue is ``CUES[j % 3]`` (video, audio, both, video, ...), so any three consecutive
records show all three cues; every other clip's cue is drawn at random.

:func:`cue_examples` draws single pictures and sounds of the same cues in memory, without
writing files: the data on which ``r1omni_fast.model.tiny`` can pretrain its towers.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from r1omni_fast.prompts import FORMAT_SUFFIX, R1_OMNI_QUESTION

#: The default classes: four of DFEW's seven, easy to tell apart by picture or by sound.
DEFAULT_LABELS: Tuple[str, ...] = ("happy", "sad", "angry", "neutral")
CUES: Tuple[str, ...] = ("video", "audio", "both")


@dataclass(frozen=True)
class ClassCues:
    """How one class looks and sounds, and the words the reasoning uses for it."""

    colour: Tuple[int, int, int]
    colour_name: str
    mouth: str  # "smile" | "frown" | "flat" | "open" | "wavy" | "small_open" | "soft_smile"
    brows: str  # "none" | "raised" | "sad" | "angry"
    face_words: str
    f0: float  # Hz at the start of the clip
    glide: float  # pitch ratio reached at the end of the clip (1 = steady)
    pulses_per_second: float  # 0 = continuous
    harmonics: Tuple[float, ...]  # amplitude of harmonics 1, 2, 3, ...
    tremolo_hz: float
    loudness: float
    voice_words: str
    noun: str


#: Every class the generator can draw: DFEW's seven plus RAVDESS's calm.
CLASS_CUES: Dict[str, ClassCues] = {
    "happy": ClassCues(
        (240, 200, 40), "yellow", "smile", "none",
        "the corners of the mouth turned up in a broad smile",
        523.0, 1.0, 6.0, (1.0, 0.3), 0.0, 0.5,
        "high and bright, in quick bouncy beeps", "happiness"),
    "sad": ClassCues(
        (50, 90, 220), "blue", "frown", "sad",
        "the corners of the mouth turned down and the inner ends of the eyebrows raised",
        165.0, 0.75, 0.0, (1.0, 0.2), 0.0, 0.3,
        "low and soft, slowly falling in pitch", "sadness"),
    "angry": ClassCues(
        (220, 40, 40), "red", "flat", "angry",
        "a tight straight mouth and eyebrows slanting down toward the nose",
        220.0, 1.0, 8.0, (1.0, 0.0, 0.6, 0.0, 0.4), 0.0, 0.8,
        "harsh and buzzing, in loud rapid bursts", "anger"),
    "neutral": ClassCues(
        (170, 170, 170), "grey", "flat", "none",
        "a plain straight mouth and relaxed eyebrows",
        330.0, 1.0, 0.0, (1.0,), 0.0, 0.4,
        "a steady, even mid-pitched tone", "a neutral state"),
    "surprise": ClassCues(
        (250, 140, 30), "orange", "open", "raised",
        "a round open mouth and eyebrows raised high",
        300.0, 2.3, 0.0, (1.0, 0.2), 0.0, 0.5,
        "rising sharply in pitch", "surprise"),
    "disgust": ClassCues(
        (60, 170, 60), "green", "wavy", "angry",
        "a twisted wavy mouth and lowered eyebrows",
        200.0, 1.0, 0.0, (0.6, 1.0, 0.5), 3.0, 0.5,
        "a nasal, wobbling low tone", "disgust"),
    "fear": ClassCues(
        (150, 60, 200), "purple", "small_open", "sad",
        "a small open mouth and raised, tense eyebrows",
        620.0, 1.0, 0.0, (1.0, 0.2), 12.0, 0.5,
        "high and trembling", "fear"),
    "calm": ClassCues(
        (40, 180, 170), "teal", "soft_smile", "none",
        "a gentle slight smile and relaxed eyebrows",
        260.0, 1.0, 0.0, (1.0,), 0.5, 0.3,
        "a slow, gentle swelling tone", "calm"),
}


@dataclass(frozen=True)
class SynthDataset:
    """Where :func:`generate` wrote things."""

    root: Path
    sft: Path
    train: Path
    test: Path
    manifest: Path
    clips: List[Path]


def generate(
    out: Union[str, os.PathLike],
    *,
    n: int = 64,
    seed: int = 0,
    labels: Sequence[str] = DEFAULT_LABELS,
    test_fraction: float = 0.25,
    size: int = 96,
    num_frames: int = 12,
    fps: int = 8,
    sample_rate: int = 16000,
    codec: Optional[str] = None,
    reasoning: str = "full",
    sft_fraction: Optional[float] = None,
) -> SynthDataset:
    """Write ``n`` synthetic clips and the sft / train / test JSON files under ``out``.

    ``reasoning="full"`` writes sentences describing the cues present (colour, expression,
    voice); ``"short"`` writes only which cue carries the label (``SHORT_REASONING``: "the face",
    "the voice", "the face and the voice"), which a tiny model learns in a few CPU minutes.

    Labels are balanced (``n // len(labels)`` each, the remainder to the first classes) and
    shuffled; the test split takes ``round(test_fraction * count)`` clips of every class (at least
    one when the class has two or more). ``sft_fraction`` = None writes every training clip to
    both sft.json (with reasoning) and train.json (bare label); a number in (0, 1) instead puts
    ``round(sft_fraction * count)`` of each class's training clips (at least one) in sft.json
    only (round-robin over the classes, cues cycling through video, audio, both: module
    docstring) and the rest in train.json only. ``codec`` defaults to libx264, else mpeg4.
    Manifest splits: "sft", "train" or "test" ("train" = both when ``sft_fraction`` is None).
    """
    labels = tuple(str(x).strip().lower() for x in labels)
    unknown = [x for x in labels if x not in CLASS_CUES]
    if unknown:
        raise ValueError(
            f"the synthetic generator cannot draw {unknown}: choose labels from {sorted(CLASS_CUES)}"
        )
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise ValueError(f"labels must be at least two distinct classes, got {list(labels)}")
    if n < len(labels):
        raise ValueError(f"n must be at least the number of labels ({len(labels)}), got {n}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if sft_fraction is not None and not 0.0 < sft_fraction < 1.0:
        raise ValueError(f"sft_fraction must be in (0, 1) or None, got {sft_fraction}")
    if reasoning not in ("full", "short"):
        raise ValueError(f"reasoning must be 'full' or 'short', got {reasoning!r}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number >= 32, got {size}")
    if num_frames < 1 or fps < 1:
        raise ValueError(f"num_frames and fps must be >= 1, got {num_frames} and {fps}")
    codec = codec or _default_video_codec()

    from r1omni_fast.atomic import temporary_sibling

    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} is a file: give a folder for the clips and data files")
    # Everything is written into a temporary sibling, created first (a read-only or full parent
    # fails before any clip is drawn) and moved into place at the end: OUT never holds half a set.
    root.parent.mkdir(parents=True, exist_ok=True)
    work = temporary_sibling(root)
    if work.exists():
        shutil.rmtree(work)
    (work / "clips").mkdir(parents=True)
    try:
        paths = _generate_into(work, root, n=n, seed=seed, labels=labels, test_fraction=test_fraction,
                               sft_fraction=sft_fraction, reasoning=reasoning, size=size, num_frames=num_frames,
                               fps=fps, sample_rate=sample_rate, codec=codec)
        _move_into_place(work, root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return paths


def _move_into_place(work: Path, root: Path) -> None:
    """``work`` becomes ``root`` (renamed, or its entries moved into an existing ``root`` with
    ``manifest.json`` last: a folder holding other things keeps them)."""
    from r1omni_fast.atomic import fsync_dir, fsync_tree, replace_files

    if not root.exists():
        fsync_tree(work)
        os.replace(work, root)
        fsync_dir(root.parent)
        return
    replace_files(root, work, marker="manifest.json")


def _generate_into(work: Path, root: Path, *, n: int, seed: int, labels: Sequence[str], test_fraction: float,
                   sft_fraction: Optional[float], reasoning: str, size: int, num_frames: int, fps: int,
                   sample_rate: int, codec: str) -> "SynthDataset":

    order_rng = np.random.default_rng([seed, 1 << 20])
    clip_labels = [labels[i % len(labels)] for i in range(n)]
    clip_labels = [clip_labels[i] for i in order_rng.permutation(n)]
    is_test = _stratified_split(clip_labels, test_fraction, order_rng)
    is_sft = [False] * n
    if sft_fraction is not None:
        train_idx = [i for i in range(n) if not is_test[i]]
        picked = _stratified_split([clip_labels[i] for i in train_idx], sft_fraction, order_rng)
        for i, sft_clip in zip(train_idx, picked):
            is_sft[i] = sft_clip
    cold_order = _cold_start_order(clip_labels, is_sft, labels)
    cold_cue = {i: CUES[j % len(CUES)] for j, i in enumerate(cold_order)}

    records = []
    clips = []
    width = max(4, len(str(n - 1)))
    for i, label in enumerate(clip_labels):
        rng = np.random.default_rng([seed, i])
        cue = CUES[int(rng.integers(len(CUES)))]  # drawn for every clip, so other clips keep their draws
        cue = cold_cue.get(i, cue)
        params = _clip_params(rng, size)
        name = f"{i:0{width}d}"
        video_rel = f"clips/{name}.mp4"
        frames = _draw_frames(label if cue != "audio" else None, params, size, num_frames, fps)
        samples = _synth_audio(label if cue != "video" else None, params,
                               num_frames / fps, sample_rate)
        _write_mp4(work / video_rel, frames, samples, fps, sample_rate, codec)
        clips.append(root / video_rel)
        text = _reasoning(label, cue, params, rng) if reasoning == "full" else SHORT_REASONING[cue]
        records.append({
            "id": f"synth-{name}", "video": video_rel, "label": label, "cue": cue,
            "split": "test" if is_test[i] else "sft" if is_sft[i] else "train", "reasoning": text,
            "params": params,
        })

    human = f"<video>\n<audio>\n{R1_OMNI_QUESTION} {FORMAT_SUFFIX}"

    def entry(r: dict, gpt: str) -> dict:
        return {"id": r["id"], "video": r["video"], "cue": r["cue"],
                "conversations": [{"from": "human", "value": human},
                                  {"from": "gpt", "value": gpt}]}

    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    cold = [records[i] for i in cold_order] if sft_fraction is not None else train
    sft = [entry(r, f"<think>{r['reasoning']}</think>\n<answer>{r['label']}</answer>") for r in cold]
    paths = SynthDataset(root, root / "sft.json", root / "train.json", root / "test.json",
                         root / "manifest.json", clips)
    _write_json(work / paths.sft.name, sft)
    _write_json(work / paths.train.name, [entry(r, r["label"]) for r in train])
    _write_json(work / paths.test.name, [entry(r, r["label"]) for r in test])
    _write_json(work / paths.manifest.name, {
        "generator": "r1omni_fast.data.synthetic", "seed": seed, "n": n, "labels": list(labels),
        "test_fraction": test_fraction, "sft_fraction": sft_fraction, "size": size,
        "num_frames": num_frames, "fps": fps, "sample_rate": sample_rate, "video_codec": codec, "audio_codec": "aac",
        "clips": [{k: r[k] for k in ("id", "video", "label", "cue", "split", "params")}
                  for r in records],
    })
    return paths


@dataclass(frozen=True)
class CueExamples:
    """Pictures and sounds drawn by :func:`cue_examples` (index ``len(labels)`` = no cue)."""

    labels: Tuple[str, ...]
    frames: np.ndarray  # (n, size, size, 3) uint8: one frame of a face, or of a plain screen
    frame_labels: np.ndarray  # (n,) int64 into labels; len(labels) = plain screen
    sounds: np.ndarray  # (n, samples) float32 in [-1, 1] at sample_rate: a voice, or silence
    sound_labels: np.ndarray  # (n,) int64 into labels; len(labels) = silence


def cue_examples(
    n: int,
    *,
    seed: int = 0,
    labels: Sequence[str] = tuple(CLASS_CUES),
    size: int = 96,
    num_frames: int = 12,
    fps: int = 8,
    sample_rate: int = 16000,
) -> CueExamples:
    """``n`` pictures and ``n`` sounds of the generator's cues, drawn in memory (no encoding).

    Picture i and sound i are drawn independently, each uniformly among ``labels`` plus "no cue"
    (a plain screen, silence), with the same per-clip jitter as :func:`generate` and a random
    frame of the clip. Draws come from ``(seed, 3 << 20, i)``, a stream :func:`generate` never
    uses, so these are never the clips of a dataset; the same seed gives the same arrays.
    """
    labels = tuple(labels)
    unknown = [x for x in labels if x not in CLASS_CUES]
    if unknown:
        raise ValueError(f"cue_examples cannot draw {unknown}: choose labels from {sorted(CLASS_CUES)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seconds = num_frames / fps
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    sounds = np.empty((n, int(round(seconds * sample_rate))), dtype=np.float32)
    frame_labels = np.empty(n, dtype=np.int64)
    sound_labels = np.empty(n, dtype=np.int64)
    for i in range(n):
        rng = np.random.default_rng([seed, 3 << 20, i])
        frame_labels[i], sound_labels[i] = rng.integers(len(labels) + 1, size=2)
        params = _clip_params(rng, size)
        t = int(rng.integers(num_frames))
        face = labels[frame_labels[i]] if frame_labels[i] < len(labels) else None
        frames[i] = _draw_frames(face, params, size, t + 1, fps)[t]
        voice = labels[sound_labels[i]] if sound_labels[i] < len(labels) else None
        sounds[i] = _synth_audio(voice, params, seconds, sample_rate)
    return CueExamples(labels, frames, frame_labels, sounds, sound_labels)


def _default_video_codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _cold_start_order(clip_labels: List[str], is_sft: List[bool], labels: Sequence[str]) -> List[int]:
    """The cold-start clips in sft.json's order: round-robin over ``labels`` (each class's clips
    in clip order), so that every prefix of k * len(labels) records is class-balanced."""
    per_class = [[i for i, (x, sft) in enumerate(zip(clip_labels, is_sft)) if sft and x == label] for label in labels]
    order = []
    for rank in range(max((len(c) for c in per_class), default=0)):
        order += [c[rank] for c in per_class if rank < len(c)]
    return order


def _stratified_split(clip_labels: List[str], fraction: float, rng: np.random.Generator) -> List[bool]:
    is_test = [False] * len(clip_labels)
    for label in sorted(set(clip_labels)):
        idx = [i for i, x in enumerate(clip_labels) if x == label]
        k = int(round(fraction * len(idx)))
        if fraction > 0 and k == 0 and len(idx) >= 2:
            k = 1
        for j in rng.permutation(len(idx))[:k]:
            is_test[idx[int(j)]] = True
    return is_test


def _clip_params(rng: np.random.Generator, size: int) -> dict:
    """Per-clip jitter; plain Python numbers so that the manifest can record them."""
    return {
        "cx": round(size / 2 + float(rng.uniform(-0.06, 0.06)) * size, 2),
        "cy": round(size / 2 + float(rng.uniform(-0.06, 0.06)) * size, 2),
        "radius": round(float(rng.uniform(0.28, 0.34)) * size, 2),
        "background": int(rng.integers(20, 50)),
        "pitch_scale": round(float(rng.uniform(0.95, 1.05)), 4),
        "phase": round(float(rng.uniform(0, 1)), 4),
    }


# ----------------------------------------------------------------------------- picture


def _draw_frames(label: Optional[str], p: dict, size: int, num_frames: int, fps: int) -> np.ndarray:
    """(num_frames, size, size, 3) uint8: the class face (bobbing gently), or a plain screen."""
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for t in range(num_frames):
        img = np.full((size, size, 3), p["background"], dtype=np.float32)
        if label is not None:
            bob = 0.03 * size * math.sin(2 * math.pi * (t / fps + p["phase"]))
            _draw_face(img, xx, yy, CLASS_CUES[label], p["cx"], p["cy"] + bob, p["radius"])
        frames[t] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return frames


def _draw_face(img, xx, yy, cues: ClassCues, cx: float, cy: float, r: float) -> None:
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = cues.colour
    ink = (25, 25, 25)
    t = max(1.5, 0.06 * r)  # stroke half-width
    ex, ey, er = 0.38 * r, 0.25 * r, 0.11 * r
    for side in (-1, 1):
        img[(xx - (cx + side * ex)) ** 2 + (yy - (cy - ey)) ** 2 <= er * er] = ink
        by = cy - ey - 0.25 * r
        inner, outer = cx + side * 0.15 * r, cx + side * 0.6 * r
        if cues.brows == "angry":  # inner ends low
            _stroke(img, xx, yy, (inner, by + 0.1 * r), (outer, by - 0.08 * r), t, ink)
        elif cues.brows == "sad":  # inner ends high
            _stroke(img, xx, yy, (inner, by - 0.1 * r), (outer, by + 0.06 * r), t, ink)
        elif cues.brows == "raised":
            _stroke(img, xx, yy, (inner, by - 0.14 * r), (outer, by - 0.14 * r), t, ink)
        elif cues.brows == "none":
            _stroke(img, xx, yy, (inner, by), (outer, by), t * 0.7, ink)
    my, w = cy + 0.42 * r, 0.45 * r
    dx = (xx - cx) / w
    within = np.abs(dx) <= 1.0
    if cues.mouth in ("smile", "frown", "flat", "soft_smile", "wavy"):
        bend = {"smile": 0.28, "soft_smile": 0.1, "frown": -0.28, "flat": 0.0, "wavy": 0.0}[cues.mouth]
        curve = my + bend * r * (1 - dx**2) - bend * r / 2
        if cues.mouth == "wavy":
            curve = my + 0.08 * r * np.sin(3 * math.pi * dx)
        img[within & (np.abs(yy - curve) <= t)] = ink
    else:  # open mouths: a filled ellipse
        a, b = (0.22 * r, 0.2 * r) if cues.mouth == "open" else (0.12 * r, 0.1 * r)
        img[((xx - cx) / a) ** 2 + ((yy - my) / b) ** 2 <= 1.0] = ink


def _stroke(img, xx, yy, p0, p1, half_width, colour) -> None:
    """Paint the pixels within ``half_width`` of the segment p0-p1."""
    (x0, y0), (x1, y1) = p0, p1
    vx, vy = x1 - x0, y1 - y0
    s = np.clip(((xx - x0) * vx + (yy - y0) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    img[(xx - (x0 + s * vx)) ** 2 + (yy - (y0 + s * vy)) ** 2 <= half_width**2] = colour


# ----------------------------------------------------------------------------- sound


def _synth_audio(label: Optional[str], p: dict, seconds: float, sample_rate: int) -> np.ndarray:
    """Mono float32 in [-1, 1]: the class voice, or silence."""
    n = int(round(seconds * sample_rate))
    if label is None:
        return np.zeros(n, dtype=np.float32)
    c = CLASS_CUES[label]
    t = np.arange(n, dtype=np.float64) / sample_rate
    # Exponential glide from f0 to f0*glide over the clip; phase is the integral of frequency.
    f0 = c.f0 * p["pitch_scale"]
    k = math.log(c.glide) / seconds if c.glide != 1.0 else 0.0
    phase = 2 * math.pi * f0 * (t if k == 0 else np.expm1(k * t) / k)
    wave = sum(a * np.sin((h + 1) * phase) for h, a in enumerate(c.harmonics) if a)
    wave = wave / sum(c.harmonics)
    env = np.ones_like(t)
    if c.pulses_per_second:
        cycle = (t * c.pulses_per_second + p["phase"]) % 1.0
        env = (cycle < 0.55).astype(np.float64)
    if c.tremolo_hz:
        env = env * (0.65 + 0.35 * np.sin(2 * math.pi * c.tremolo_hz * t))
    ramp = min(n // 2, int(0.01 * sample_rate))  # 10 ms fades avoid clicks at the ends
    env[:ramp] *= np.linspace(0, 1, ramp)
    env[n - ramp:] *= np.linspace(1, 0, ramp)
    return (c.loudness * env * wave).astype(np.float32)


# ----------------------------------------------------------------------------- encoding


def _write_mp4(path: Path, frames: np.ndarray, samples: np.ndarray, fps: int, sample_rate: int,
               codec: str) -> None:
    import av

    # bitexact keeps library version strings out of the file, so equal inputs give equal bytes.
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        vs = container.add_stream(codec, rate=fps)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.codec_context.thread_count = 1  # single-threaded encoding is reproducible
        if codec == "libx264":
            # x264's assembly reads past the edge of the input picture (into the frame buffer's
            # uninitialised padding) where a plane's size is not a multiple of 16, so the same
            # frames gave different bytes from run to run (4 variants in 8 encodes at 96x96).
            # Its C code reads only the picture: equal inputs give equal bytes at every size.
            vs.options = {"preset": "veryfast", "crf": "18", "flags": "+bitexact", "x264-params": "no-asm=1"}
        else:
            vs.options = {"qscale": "3", "flags": "+bitexact"}
        aus = container.add_stream("aac", rate=sample_rate)
        aus.layout = "mono"
        aus.bit_rate = 48000
        aus.codec_context.thread_count = 1
        aus.options = {"flags": "+bitexact"}

        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(vs.encode(frame))
        container.mux(vs.encode(None))

        chunk = 1024
        for start in range(0, len(samples), chunk):
            block = samples[start:start + chunk].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            container.mux(aus.encode(frame))
        container.mux(aus.encode(None))


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- reasoning

#: ``reasoning="short"``: the cue that carries the label, in the words of the tiny tokenizer.
SHORT_REASONING = {"video": "the face", "audio": "the voice", "both": "the face and the voice"}

_FACE_OPENERS = ("The face is drawn in {colour}, with {features}.",
                 "I see a {colour} face with {features}.",
                 "A {colour} face fills the picture: {features}.")
_VOICE_OPENERS = ("The voice is {voice}.", "The sound is {voice}.", "In the audio, the tone is {voice}.")


def _reasoning(label: str, cue: str, p: dict, rng: np.random.Generator) -> str:
    """Reasoning that names the cues actually present in the clip."""
    c = CLASS_CUES[label]
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    parts = []
    if cue in ("video", "both"):
        parts.append(pick(_FACE_OPENERS).format(colour=c.colour_name, features=c.face_words))
    else:
        parts.append("The picture is a plain dark screen with no face, so it gives no cue.")
    if cue in ("audio", "both"):
        parts.append(pick(_VOICE_OPENERS).format(voice=c.voice_words))
    else:
        parts.append("The audio track is silent, so the sound gives no cue.")
    if cue == "both":
        parts.append(f"The picture and the sound agree, and both point to {c.noun}.")
    elif cue == "video":
        parts.append(f"The facial expression alone points to {c.noun}.")
    else:
        parts.append(f"The voice alone points to {c.noun}.")
    return " ".join(parts)
