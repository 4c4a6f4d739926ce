"""Soak of the native media loader: mutated media files through ``media.load_batch`` in child
processes, with a count per outcome.

Seed clips are made with the ``ffmpeg`` command line (tiny: 64x48, 1 s): H.264/AAC MP4 with and
without B-frames, a rotated MP4, a stream-copy cut (edit list), an open-GOP clip, MKV, AVI
(MPEG-4 Part 2), MOV with 5.1 PCM, WebM (VP9/Opus). Each soak file is a seed with 1-6 random
byte edits (set, fill, cut, duplicate, swap). The files go to child processes in batches
through ``load_batch(threads=2)``; a batch whose child dies or overruns its timeout is re-run
file by file, each in its own child, so that every file gets exactly one outcome:

- ``ok``: a Clip with finite frames and mel, the shapes asked for, and fps != 0;
- ``error``: a ``MediaError`` naming the file;
- ``bad_result``: a Clip that breaks the contract above (or an error naming another path);
- ``exception``: any other Python exception (a traceback);
- ``crash``: the child died (signal or exit without a result);
- ``hang``: the child overran ``--timeout``.

Files that crash, hang, give a bad result or an exception are kept in ``--out`` for
reproduction. Usage::

    nice -n 19 python bench/media_soak.py --files 10000 --out /tmp/soak
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPTIONS = dict(num_frames=4, image_size=32, n_mels=80)

SEEDS = {
    # name: ffmpeg arguments after the inputs
    "h264_aac.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-g", "6", "-bf", "0",
                     "-c:a", "aac"],
    "h264_bframes.mp4": ["-c:v", "libx264", "-preset", "veryfast", "-g", "12", "-bf", "3",
                         "-c:a", "aac"],
    "open_gop.mp4": ["-c:v", "libx264", "-preset", "veryfast", "-x264-params",
                     "open_gop=1:keyint=6:min-keyint=6:bframes=2", "-c:a", "aac"],
    "h264.mkv": ["-c:v", "libx264", "-preset", "ultrafast", "-g", "8", "-c:a", "libvorbis"],
    "mpeg4.avi": ["-c:v", "mpeg4", "-q:v", "5", "-c:a", "libmp3lame"],
    "pcm51.mov": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "pcm_s16le", "-ac", "6"],
    "vp9.webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                 "-c:a", "libopus"],
}
INPUTS = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=15:duration=1",
          "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=48000:duration=1"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True,
                   capture_output=True)


def make_seeds(folder: Path) -> list[Path]:
    out = []
    for name, args in SEEDS.items():
        p = folder / name
        ffmpeg(*INPUTS, *args, "-shortest", str(p))
        out.append(p)
    base = folder / "h264_bframes.mp4"
    rotated = folder / "rotated.mp4"
    ffmpeg("-i", str(base), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    cut = folder / "cut.mp4"
    ffmpeg("-ss", "0.4", "-i", str(base), "-c", "copy", str(cut))
    return out + [rotated, cut]


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if not b:
            break
        i = rng.randrange(len(b))
        kind = rng.choice(["set"] * 6 + ["fill", "fill", "cut", "dup", "swap"])
        n = rng.randint(1, 512)
        if kind == "set":
            b[i] = rng.randrange(256)
        elif kind == "fill":
            b[i:i + n] = bytes([rng.choice([0, 255, rng.randrange(256)])]) * len(b[i:i + n])
        elif kind == "cut":
            del b[i:]
        elif kind == "dup":
            b[i:i] = b[i:i + n]
        else:
            j = rng.randrange(len(b))
            b[i:i + n], b[j:j + n] = b[j:j + n], b[i:i + n]
    return bytes(b)


def child(list_file: str) -> None:
    """Loads the listed files in one load_batch and prints one JSON outcome per file."""
    import numpy as np

    from r1omni_fast import media

    paths = json.loads(Path(list_file).read_text())
    try:
        items = media.load_batch(paths, threads=2, **OPTIONS)
    except Exception as exc:  # a traceback, not a per-item error
        for p in paths:
            print(json.dumps({"path": p, "outcome": "exception",
                              "why": f"{type(exc).__name__}: {exc}"}))
        return
    for p, item in zip(paths, items):
        if isinstance(item, media.MediaError):
            ok = item.path == p
            print(json.dumps({"path": p, "outcome": "error" if ok else "bad_result",
                              "why": item.reason}))
            continue
        good = (item.frames.shape == (4, 3, 32, 32) and np.isfinite(item.frames).all()
                and item.mel.shape == (80, 3000) and np.isfinite(item.mel).all()
                and item.fps != 0.0 and item.num_video_frames > 0
                and not (math.isfinite(item.fps) and item.fps < 0))
        print(json.dumps({"path": p, "outcome": "ok" if good else "bad_result",
                          "why": "" if good else f"fps={item.fps} n={item.num_video_frames}"}))


def run_batch(paths: list[str], timeout: float, tmp: Path) -> dict[str, dict]:
    """Outcome per path of one child process over ``paths`` (missing paths: crash/hang)."""
    list_file = tmp / f"batch-{os.getpid()}-{time.monotonic_ns()}.json"
    list_file.write_text(json.dumps(paths))
    try:
        r = subprocess.run([sys.executable, __file__, "--child", str(list_file)],
                           capture_output=True, text=True, timeout=timeout)
        status = "crash"
        stdout = r.stdout
    except subprocess.TimeoutExpired as exc:
        status = "hang"
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    finally:
        list_file.unlink(missing_ok=True)
    got = {}
    for line in stdout.splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(d, dict) and d.get("path") in paths:
            got[d["path"]] = d
    for p in paths:
        got.setdefault(p, {"path": p, "outcome": status, "why": ""})
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000, help="mutated files to load")
    ap.add_argument("--batch", type=int, default=50, help="files per child process")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds a batch child may take (a single-file child: a fifth)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="keep failing files here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    if shutil.which("ffmpeg") is None:
        sys.exit("media_soak: the ffmpeg command line is needed to make the seed clips")
    rng = random.Random(args.seed)
    counts: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    kept = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="media-soak-") as t:
        tmp = Path(t)
        seed_paths = make_seeds(tmp)
        seeds = [p.read_bytes() for p in seed_paths]
        done = 0
        while done < args.files:
            n = min(args.batch, args.files - done)
            paths = []
            for k in range(n):
                s = rng.randrange(len(seeds))
                p = tmp / f"m{done + k:06d}{seed_paths[s].suffix}"
                p.write_bytes(mutate(seeds[s], rng))
                paths.append(str(p))
            outcomes = run_batch(paths, args.timeout, tmp)
            if any(o["outcome"] in ("crash", "hang") for o in outcomes.values()):
                # Attribute the failure: each file alone in its own child.
                for p in paths:
                    outcomes.update(run_batch([p], args.timeout / 5, tmp))
            for p in paths:
                o = outcomes[p]
                counts[o["outcome"]] += 1
                if o["outcome"] == "error":
                    reasons[o["why"].split(":")[0][:60]] += 1
                elif o["outcome"] != "ok":
                    kept.append(o)
                    if args.out:
                        args.out.mkdir(parents=True, exist_ok=True)
                        shutil.copy(p, args.out / Path(p).name)
                os.remove(p)
            done += n
            print(f"{done} files, {time.monotonic() - started:.0f} s: {dict(counts)}",
                  flush=True)
    print(json.dumps({"files": args.files, "seconds": round(time.monotonic() - started, 1),
                      "counts": {k: counts.get(k, 0) for k in
                                 ("ok", "error", "bad_result", "exception", "crash", "hang")},
                      "top_error_reasons": reasons.most_common(12),
                      "failures": kept[:50]}, indent=1))


if __name__ == "__main__":
    main()
