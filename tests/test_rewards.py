"""Native rewards (r1omni_fast.rewards) against the pure-``re`` reference in _reward_reference."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import _reward_reference as ref
from r1omni_fast import labels as L
from r1omni_fast import rewards as R

# Pieces that stress the scanners: tags (whole, broken, nested), every kind of whitespace
# Python knows (and U+200B, which it does not), labels in every case and inflection, combining
# marks, RTL text and controls, astral characters, lone surrogates, punctuation.
TOKENS = [
    "<think>", "</think>", "<answer>", "</answer>", "<answer", "/answer>", "<think", "</", "<", ">",
    "\n", "\r\n", "\r", " ", "\t", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u1680",
    "\u2009", "\u2028", "\u2029", "\u3000", "\u200b", "\u180e",
    "happy", "Happy", "HAPPY", "sad", "sadness", "fearful", "Fear.", "surprised!", "\u201canger\u201d",
    "calm", "joy", "contempt", "contemptuous", "helpless", "unknown", "very happy",
    "e\u0301", "\u0301", "\u05e9\u05de\u05d7", "\u0627\u0644\u063a\u0636\u0628", "\u202e", "\u200f",
    "\U0001f642", "\u0130", "\u00df", "\u03a3", "\u212a\u212a\u212a", "\u00c9MOTION", "\ud800", "\udfff", "...", "\u3002", "!", "\u2014", "",
]
piece = st.one_of(st.sampled_from(TOKENS), st.text(max_size=4))
texts = st.lists(piece, max_size=24).map("".join)
well_formed = st.builds(
    lambda a, ws, b: f"<think>{a}</think>{ws}<answer>{b}</answer>",
    texts, st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000", max_size=4), texts,
)
completions = st.one_of(texts, well_formed)
labelish = st.sampled_from(["happy", "Happy", " sad ", "fear", "fearful", "Surprised!", "calm", "neutral.",
                            "contempt", "anxious", "\u201cangry\u201d", "joy", "helplessness", "nope"])
solutions = st.one_of(
    labelish,
    st.builds(lambda pre, lab, post: f"{pre}<answer>{lab}</answer>{post}",
              st.sampled_from(["", "<think>x</think>", " ", "\n"]), st.one_of(labelish, texts),
              st.sampled_from(["", "\n", " tail", "</answer>"])),
    texts,
)
label_specs = st.sampled_from([None, "dfew", "mafw", "ravdess", ["Happy", "sad", "\u00e9motion", "kkk"]])


def _label_set(spec):
    return R.ALL_LABELS if spec is None else L.resolve(spec)


@given(st.lists(completions, max_size=12))
def test_format_matches_reference(batch):
    assert R.format_reward(batch) == [ref.format_reward(t) for t in batch]


@given(st.lists(st.tuples(completions, solutions), max_size=12))
def test_r1omni_accuracy_matches_reference(pairs):
    comps, sols = [c for c, _ in pairs], [s for _, s in pairs]
    expected = [ref.accuracy_r1omni(c, s) for c, s in pairs]
    assert R.accuracy_reward(comps, sols, mode="r1omni") == expected


@given(st.lists(st.tuples(completions, solutions), max_size=12), label_specs)
def test_robust_accuracy_matches_reference(pairs, spec):
    comps, sols = [c for c, _ in pairs], [s for _, s in pairs]
    label_set = _label_set(spec)
    try:
        expected = [ref.accuracy_robust(c, s, label_set) for c, s in pairs]
    except ValueError:
        with pytest.raises(ValueError, match="names no label"):
            R.accuracy_reward(comps, sols, mode="robust", labels=spec)
        return
    assert R.accuracy_reward(comps, sols, mode="robust", labels=spec) == expected


@given(st.lists(completions, max_size=12), st.sampled_from(R.MODES), label_specs)
def test_extract_answers_matches_reference(batch, mode, spec):
    expected = [ref.answer_as_read(t, mode, _label_set(spec)) for t in batch]
    assert R.extract_answers(batch, mode=mode, labels=spec) == expected


@given(completions)
def test_parse_matches_reference(text):
    assert tuple(R.parse_completion(text)) == ref.parse_completion(text)


@given(st.lists(st.tuples(completions, st.sampled_from(["happy", "<answer>sad</answer>", "fear"])), max_size=12))
def test_score_batch_columns_and_weighted_total(pairs):
    comps, sols = [c for c, _ in pairs], [s for _, s in pairs]
    out = R.score_batch(comps, sols, weights=(2.0, 0.5), mode="robust", labels="dfew")
    assert set(out) == {"accuracy", "format", "total"}
    np.testing.assert_array_equal(out["accuracy"], [ref.accuracy_robust(c, s, L.resolve("dfew")) for c, s in pairs])
    np.testing.assert_array_equal(out["format"], [ref.format_reward(c) for c in comps])
    np.testing.assert_array_equal(out["total"], 2.0 * out["accuracy"] + 0.5 * out["format"])


# One row per documented quirk: (completion, solution, mode, expected accuracy).
QUIRKS = {
    "r1omni is case-sensitive": ("<answer>Happy</answer>", "<answer>happy</answer>", "r1omni", 0.0),
    "r1omni strips the answer": ("<answer> \thappy\u3000</answer>", "happy", "r1omni", 1.0),
    "r1omni skips a block spanning lines": ("<answer>\nhappy\n</answer>", "<answer>happy</answer>", "r1omni", 0.0),
    "r1omni falls back to the whole stripped completion": ("\n happy \n", "<answer>happy</answer>", "r1omni", 1.0),
    "r1omni takes the first single-line block": ("<answer>a\nb</answer><answer>happy</answer>", "happy", "r1omni", 1.0),
    "r1omni: solution block spanning lines is compared whole": ("<answer>\nsad</answer>", "<answer>\nsad</answer>", "r1omni", 1.0),
    "r1omni: the first block wins over a later correct one": ("<answer>sad</answer> <answer>happy</answer>", "happy", "r1omni", 0.0),
    "r1omni: a nested open tag is part of the answer": ("<answer><answer>happy</answer>", "happy", "r1omni", 0.0),
    "r1omni: \\x1c is Python whitespace": ("<answer>\x1chappy\x1f</answer>", "happy", "r1omni", 1.0),
    "r1omni: U+200B is not whitespace": ("<answer>\u200bhappy</answer>", "happy", "r1omni", 0.0),
    "robust ignores case and punctuation": ("<answer> \u201cHappy!\u201d </answer>", "<answer>happy</answer>", "robust", 1.0),
    "robust maps inflections": ("<answer>Fearful.</answer>", "fear", "robust", 1.0),
    "robust accepts a block spanning lines": ("<answer>\nsadness\n</answer>", "sad", "robust", 1.0),
    "robust accepts a bare label word": ("  Surprised!\n", "surprise", "robust", 1.0),
    "robust: a sentence is not a label": ("I think the person is happy", "happy", "robust", 0.0),
    "robust: an unknown word scores 0": ("<answer>elated</answer>", "happy", "robust", 0.0),
    "robust: the first block wins": ("<answer>sad</answer><answer>happy</answer>", "happy", "robust", 0.0),
    "robust: inner punctuation is kept": ("<answer>ha-ppy</answer>", "happy", "robust", 0.0),
}


@pytest.mark.parametrize("completion,solution,mode,expected", list(QUIRKS.values()), ids=list(QUIRKS))
def test_documented_quirks(completion, solution, mode, expected):
    assert R.accuracy_reward([completion], [solution], mode=mode) == [expected]
    oracle = ref.accuracy_r1omni(completion, solution) if mode == "r1omni" else ref.accuracy_robust(
        completion, solution, R.ALL_LABELS)
    assert oracle == expected


FORMAT_QUIRKS = {
    "minimal": ("<think></think><answer></answer>", 1.0),
    "newlines inside and between": ("<think>a\nb</think>\n \t<answer>\nx\n</answer>", 1.0),
    "leading whitespace": (" <think></think><answer></answer>", 0.0),
    "trailing newline": ("<think></think><answer></answer>\n", 0.0),
    "text between the blocks": ("<think></think>so<answer></answer>", 0.0),
    "a later </think> can close the think block": ("<think>a</think>b</think><answer>c</answer>", 1.0),
    "answer contains a closing tag": ("<think></think><answer>a</answer>b</answer>", 1.0),
    "answer before think": ("<answer></answer><think></think>", 0.0),
    "unicode whitespace between": ("<think></think>\u2028\u3000\x1c<answer></answer>", 1.0),
    "zero-width space between": ("<think></think>\u200b<answer></answer>", 0.0),
}


@pytest.mark.parametrize("text,expected", list(FORMAT_QUIRKS.values()), ids=list(FORMAT_QUIRKS))
def test_format_quirks(text, expected):
    assert R.format_reward([text]) == [expected] == [ref.format_reward(text)]


def test_whitespace_agrees_with_python_for_every_code_point():
    chars = [chr(c) for c in range(sys.maxunicode + 1)]
    acc = R.score_batch([c + "x" + c for c in chars], ["x"] * len(chars), funcs=("accuracy",), mode="r1omni")
    np.testing.assert_array_equal(acc["accuracy"], [float(c.isspace()) for c in chars])
    fmt = R.score_batch([f"<think></think>{c}<answer></answer>" for c in chars], funcs=("format",))
    np.testing.assert_array_equal(fmt["format"], [ref.format_reward(f"<think></think>{c}<answer></answer>")
                                                  for c in chars])


def test_parse_completion_parts():
    assert R.parse_completion("<think> why </think>\n<answer> Happy </answer>") == R.Parsed("why", "Happy", True)
    assert R.parse_completion("<answer>sad</answer> trailing") == R.Parsed(None, "sad", False)
    assert R.parse_completion([{"role": "assistant", "content": "<think>t</think>"}]) == R.Parsed("t", None, False)


def test_chat_completions_score_their_first_message():
    chat = [[{"role": "assistant", "content": "<think>x</think><answer>sad</answer>"}],
            [{"role": "assistant", "content": [{"type": "text", "text": "<think>x</think>"},
                                               {"type": "text", "text": "<answer>sad</answer>"}]}]]
    assert R.format_reward(chat) == [1.0, 1.0]
    assert R.format_reward(c[0]["content"] for c in chat[:1]) == [1.0]  # any iterable
    assert R.accuracy_reward(chat, ["sad", "happy"]) == [1.0, 0.0]


@pytest.mark.parametrize("part, what", [({"type": "text"}, "no such field"), ({"type": "text", "text": 5}, "int")])
def test_chat_text_part_without_a_text_string_is_a_type_error_naming_the_field(part, what):
    chat = [[{"role": "assistant", "content": [{"type": "text", "text": "<think>x</think>"}, part]}]]
    with pytest.raises(TypeError, match=f"content part of type 'text' needs a str 'text' field, got {what}"):
        R.format_reward(chat)


def test_user_callables_join_the_batch():
    def length_penalty(completions, solution, **kw):
        return [None if c == "skip" else -len(c) / 100 for c in completions]

    out = R.score_batch(["<think></think><answer>sad</answer>", "skip"], ["sad", "sad"],
                        funcs=("accuracy", "format", length_penalty), weights=(1, 1, 2), extra_column=[1, 2])
    np.testing.assert_allclose(out["length_penalty"][:1], [-0.35])
    assert np.isnan(out["length_penalty"][1])
    np.testing.assert_allclose(out["total"], [1 + 1 - 0.70, 0.0])


@pytest.mark.parametrize("call,error,match", [
    (lambda: R.accuracy_reward(["a"], ["b", "c"]), ValueError, "1 completions but 2 solutions"),
    (lambda: R.accuracy_reward(["a"], ["b"], mode="exact"), ValueError, "unknown accuracy mode"),
    (lambda: R.accuracy_reward(["a"], ["joy of life"], labels="dfew"), ValueError, r"solution\[0\]"),
    (lambda: R.accuracy_reward(["a"], ["happy"], labels="imagenet"), ValueError, "unknown label set"),
    (lambda: R.format_reward([3]), TypeError, "got int"),
    (lambda: R.format_reward("<think>"), TypeError, "one str"),
    (lambda: R.accuracy_reward(["a"], [None]), TypeError, r"solution\[0\] is NoneType"),
    (lambda: R.score_batch(["a"], funcs=("accuracy",)), ValueError, "needs `solution`"),
    (lambda: R.score_batch(["a"], ["a"], weights=(1,)), ValueError, "1 weights for 2"),
    (lambda: R.score_batch(["a"], ["a"], funcs=("bleu",)), ValueError, "unknown reward"),
])
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_native_scorer_rejects_bad_combinations():
    from r1omni_fast._native import RewardScorer

    with pytest.raises(ValueError, match="takes no labels"):
        RewardScorer("r1omni", ["happy"])
    with pytest.raises(ValueError, match="needs labels"):
        RewardScorer("robust")
    with pytest.raises(ValueError, match="duplicate label"):
        RewardScorer("robust", ["a", "a"])
    assert RewardScorer("robust", ["a"], {"b": "a"}).labels == ["a"]


def test_stub_matches_the_native_module():
    """Every reward function and method in _native.pyi exists with the same parameters."""
    import ast
    import inspect
    from pathlib import Path

    from r1omni_fast import _native

    stub = ast.parse((Path(R.__file__).parent / "_native.pyi").read_text())

    def params(fn: ast.FunctionDef) -> list:
        a = fn.args
        rest = [p for p in (a.vararg, a.kwarg) if p is not None]
        return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs + rest if p.arg != "self"]

    def native_params(obj) -> list:
        return [p for p in inspect.signature(obj).parameters if p != "self"]

    checked = 0
    for node in stub.body:
        if isinstance(node, ast.FunctionDef) and node.name != "build_info":
            assert native_params(getattr(_native, node.name)) == params(node), node.name
            checked += 1
        if isinstance(node, ast.ClassDef) and node.name == "RewardScorer":
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and not any(
                        isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list):
                    target = _native.RewardScorer if fn.name == "__init__" else getattr(_native.RewardScorer, fn.name)
                    assert native_params(target) == params(fn), fn.name
                    checked += 1
    # Every public name of the module is in the stub, and every stub entry was checked above.
    stubbed = {n.name for n in stub.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
               and not n.name.startswith("_")}
    public = {n for n in dir(_native) if not n.startswith("_") and callable(getattr(_native, n))}
    assert public == stubbed
    assert checked >= len(stubbed) - 2  # all functions but build_info, plus RewardScorer's methods


class _Str(str):
    """A str subclass: CPython stores it apart from its object, so the scorer encodes it."""


@given(st.lists(st.tuples(st.lists(piece, min_size=20, max_size=60).map("".join), solutions), max_size=8),
       st.sampled_from(["", "\xe9", "\u2014", "\U0001f642", "\ud800"]), st.booleans())
def test_long_texts_of_every_width_match_reference(pairs, wide, subclass):
    # Texts long enough for the scorer's 32-unit blocks, stored as Latin-1, UCS-2 or UCS-4 (the
    # character appended sets the width), as they are and as a str subclass.
    comps = [(_Str if subclass else str)(c + wide) for c, _ in pairs]
    sols = [s for _, s in pairs]
    out = R.score_batch(comps, sols, mode="r1omni")
    assert out["format"].tolist() == [ref.format_reward(c) for c in comps]
    assert out["accuracy"].tolist() == [ref.accuracy_r1omni(c, s) for c, s in zip(comps, sols)]
    try:
        expected = [ref.accuracy_robust(c, s, R.ALL_LABELS) for c, s in zip(comps, sols)]
    except ValueError:
        return
    assert R.accuracy_reward(comps, sols, mode="robust") == expected
