"""Rewards benchmark: the native batch scorer against the pure-Python ``re`` reference.

100k completions of 50-2000 characters, half well formed and half malformed in the ways
models fail (no tags, unclosed or multi-line answers, text around the blocks, nested tags).
The text is English, as the model writes it; 10% of the completions hold a non-ASCII character
(a curly quote, an accent, an em dash). A str that is not ASCII is stored as Latin-1, UCS-2 or
UCS-4 and has no UTF-8 of its own, so a last row scores a batch where every completion is
non-ASCII. Each repetition scores fresh str objects (CPython caches a str's UTF-8 once made,
which would flatter repeats of any path that asks for it). Both columns (accuracy + format) are scored; every native result is checked
against the reference before any time is printed.

``--profile`` then shows where the all-non-ASCII batch's time goes: the native score of it
against that of its ASCII twin (every non-ASCII character replaced by "?": the same units, one
byte each), and what encoding every str to UTF-8 under the GIL costs, which the native hand-off
avoids by reading each str's own code units (Latin-1, UCS-2, UCS-4) and encoding them in the
scoring threads. The Rust side of that encoding has its own timing loop:
``cargo test --release --lib text -- --ignored --nocapture``.

    PYTHONPATH=python python bench/rewards.py [--n 100000] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import _reward_reference as ref  # noqa: E402
from r1omni_fast import rewards as R  # noqa: E402

WORDS = ["the", "face", "shows", "raised", "brows", "and", "voice", "trembles", "so", "tone", "is",
         "calm", "smile", "subject", "appears", "tense", "\n", "\n\n", ","]
NON_ASCII = ["\u201cwide\u201d", "na\u00efve", "\u2014", "caf\u00e9", "\u2019s", "\U0001f642"]
LABELS = ["happy", "sad", "fear", "angry", "surprise", "neutral", "disgust"]
ANSWERS = LABELS + ["Happy", "fearful", "Sadness.", "surprised!", "elated"]


def make_batch(n: int, non_ascii_share: float, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    comps, sols = [], []
    for _ in range(n):
        target = rng.randint(50, 2000)
        filler = []
        size = 0
        while size < target - 40:
            w = rng.choice(WORDS)
            filler.append(w)
            size += len(w) + 1
        if rng.random() < non_ascii_share:
            filler.insert(rng.randrange(len(filler) + 1), rng.choice(NON_ASCII))
        think, answer = " ".join(filler), rng.choice(ANSWERS)
        kind = rng.randrange(8)
        if kind < 4:
            text = f"<think>{think}</think>{rng.choice(['', chr(10), ' '])}<answer>{answer}</answer>"
        elif kind == 4:
            text = f"<think>{think}</think>\n<answer>\n{answer}\n</answer>"
        elif kind == 5:
            text = f"{think} {answer}"
        elif kind == 6:
            text = f"<think>{think}</think> so <answer>{answer}</answer>\n"
        else:
            text = f"<think>{think}<think></think><answer>{answer}"
        comps.append(text)
        sols.append(f"<answer>{rng.choice(LABELS)}</answer>")
    return comps, sols


def fresh(texts: list[str]) -> list[str]:
    """Equal str objects that are not the given ones (no cached UTF-8)."""
    return [t.encode("utf-8").decode("utf-8") for t in texts]


def best_of(repeat: int, texts: list[str], fn):
    times = []
    for _ in range(repeat):
        batch = fresh(texts)
        t0 = time.perf_counter()
        out = fn(batch)
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="where the all-non-ASCII batch's time goes")
    args = ap.parse_args()
    print(f"{args.n} completions of 50-2000 characters, {os.cpu_count()} CPUs, best of {args.repeat}")
    print(f"{'batch':22} {'mode':7} {'python re (s)':>14} {'native batch (s)':>17} {'speed-up':>9} "
          f"{'format=1':>9} {'accuracy=1':>11}")
    cases = [("english, 10% non-ASCII", 0.1, "r1omni"), ("english, 10% non-ASCII", 0.1, "robust"),
             ("every one non-ASCII", 1.0, "r1omni")]
    for name, share, mode in cases:
        comps, sols = make_batch(args.n, share)
        if mode == "r1omni":
            def reference(batch):
                return ([ref.accuracy_r1omni(c, s) for c, s in zip(batch, sols)],
                        [ref.format_reward(c) for c in batch])
        else:
            def reference(batch):
                return ([ref.accuracy_robust(c, s, R.ALL_LABELS) for c, s in zip(batch, sols)],
                        [ref.format_reward(c) for c in batch])
        t_ref, (acc, fmt) = best_of(args.repeat, comps, reference)
        t_nat, out = best_of(args.repeat, comps, lambda batch: R.score_batch(batch, sols, mode=mode))
        np.testing.assert_array_equal(out["accuracy"], acc)
        np.testing.assert_array_equal(out["format"], fmt)
        print(f"{name:22} {mode:7} {t_ref:14.3f} {t_nat:17.3f} {t_ref / t_nat:8.1f}x "
              f"{np.mean(fmt):9.2f} {np.mean(acc):11.2f}", flush=True)
    if args.profile:
        profile(args.n, args.repeat)


def profile(n: int, repeat: int) -> None:
    comps, sols = make_batch(n, 1.0)
    twin = [c.encode("ascii", "replace").decode("ascii") for c in comps]

    def native(batch):
        return R.score_batch(batch, sols, mode="r1omni")

    t_nat, _ = best_of(repeat, comps, native)
    t_twin, _ = best_of(repeat, twin, native)
    t_enc, _ = best_of(repeat, comps, lambda batch: [c.encode("utf-8", "surrogatepass") for c in batch])
    print(f"\nevery one non-ASCII, r1omni: native {t_nat:.3f} s, its ASCII twin {t_twin:.3f} s "
          f"(the code-unit hand-off and encoding cost {t_nat - t_twin:+.3f} s); encoding every str "
          f"to UTF-8 under the GIL alone would take {t_enc:.3f} s")


if __name__ == "__main__":
    main()
