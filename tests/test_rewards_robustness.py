"""Hostile and large inputs: no crash, no hang, no panic across the FFI boundary."""

from __future__ import annotations

import random
import sys
import threading

import numpy as np
import pytest

import _reward_reference as ref
from r1omni_fast import rewards as R


def test_ten_megabyte_completions():
    soup = "<answer><think></think>\n" * 440_000  # 10.5 MB of unclosed, line-broken tags
    nested = "<think>" + "</think>\t" * 1_100_000 + "</think> <answer>" + "<answer>" * 100_000 + "happy</answer>"
    assert len(soup) > 10_000_000 and len(nested) > 10_000_000
    out = R.score_batch([soup, nested], [soup, "happy"], mode="r1omni")
    np.testing.assert_array_equal(out["format"], [0.0, 1.0])
    # The reference agrees where `re` is fast enough to ask it.
    np.testing.assert_array_equal(out["accuracy"], [ref.accuracy_r1omni(soup, soup), 0.0])
    assert R.accuracy_reward([nested], ["happy"], mode="robust") == [0.0]
    assert R.parse_completion(soup) == R.Parsed("", None, False)


def _mixed_batch(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    words = ["happy", "Sad", "fearful", "neutral.", "anger", "calm", "elated"]
    comps, sols = [], []
    for _ in range(n):
        w = rng.choice(words)
        kind = rng.randrange(4)
        if kind == 0:
            comps.append(f"<think>{'x' * rng.randrange(40)}</think>\n<answer>{w}</answer>")
        elif kind == 1:
            comps.append(f"<think>\n{w}</think> <answer>\n{w}</answer>\n")
        elif kind == 2:
            comps.append(w)
        else:
            comps.append(f"<answer>{w}</answer><answer>{w}")
        sols.append(f"<answer>{rng.choice(['happy', 'sad', 'fear', 'angry'])}</answer>")
    return comps, sols


def test_hundred_thousand_item_batch_matches_reference():
    comps, sols = _mixed_batch(100_000)
    out = R.score_batch(comps, sols)
    assert out["total"].shape == (100_000,)
    np.testing.assert_array_equal(out["format"], [ref.format_reward(c) for c in comps])
    np.testing.assert_array_equal(out["accuracy"], [ref.accuracy_robust(c, s, R.ALL_LABELS) for c, s in zip(comps, sols)])


def test_a_panic_in_the_parallel_scorer_becomes_a_python_exception():
    from r1omni_fast import _native

    with pytest.raises(RuntimeError, match="internal error in the reward scorer.*deliberate panic at item 54321"):
        _native._panicking_batch_for_tests(100_000, 54_321)
    # The thread pool survives: scoring still works afterwards.
    np.testing.assert_array_equal(_native._panicking_batch_for_tests(3, 3), [0.0, 1.0, 2.0])
    assert R.format_reward(["<think></think><answer></answer>"]) == [1.0]


def test_scoring_releases_the_gil():
    """The main thread runs Python code while another thread is inside the native scorer.

    With a 60 s switch interval the interpreter never takes the GIL from a thread by force, so
    the main thread can only run while the scoring thread has released the GIL itself.
    """
    batch = ["<answer><think></think>\n" * 200_000] * 20  # 20 x 4.8 MB, one shared string
    scorer = R._scorer("r1omni")
    done = threading.Event()
    seen_while_scoring = []

    def score():
        scorer.score(batch, batch)
        done.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    try:
        thread = threading.Thread(target=score)
        thread.start()  # returns once the new thread lets go of the GIL
        seen_while_scoring.append(not done.is_set())
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert done.is_set() and seen_while_scoring == [True]
