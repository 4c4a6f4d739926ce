"""Verifiable rewards of the R1-Omni recipe, scored natively (``rust/reward``).

Reward functions follow TRL's signature, ``fn(completions, **columns) -> list[float]``, where a
completion is a string or a chat-message list ``[{"role": "assistant", "content": ...}]`` (its
first message's content is scored, as in R1-Omni) and ``solution`` is a dataset column.

format (1.0 or 0.0)
    ``re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", text, re.DOTALL)``: nothing
    may precede ``<think>`` or follow ``</answer>``, not even whitespace.

accuracy, ``mode="r1omni"`` (R1-Omni exactly, quirks included)
    ``answer(t) = m.group(1).strip() if (m := re.search(r"<answer>(.*?)</answer>", t)) else
    t.strip()``; reward 1.0 iff ``answer(completion) == answer(solution)``. The search has no
    DOTALL, for the solution as for the completion: a block spanning lines is skipped, and
    without a single-line block the whole stripped text is compared. Case-sensitive.

accuracy, ``mode="robust"`` (default)
    The answer text is group 1 of ``re.search(r"<answer>(.*?)</answer>", t, re.DOTALL)`` (the
    first block, newlines allowed), else the whole text — so an untagged completion scores only
    when it is nothing but one label word. That text is trimmed at both ends of whitespace and
    punctuation (ASCII punctuation plus typographic quotes, CJK punctuation, dashes, ellipsis,
    inverted marks), lower-cased and looked up among the labels, then among the aliases of
    ``r1omni_fast.labels`` whose target is in the set. Reward 1.0 iff the completion names the
    solution's label; an answer naming no label scores 0.0. A solution naming no label raises
    ValueError. ``labels`` is anything ``labels.resolve`` accepts; ``None`` means the union of
    the built-in sets (DFEW, MAFW, RAVDESS).

Batches are scored in parallel in Rust with the GIL released (:func:`score_batch`).

Reasoning rewards (Python; by name in ``reward_funcs``, see :data:`REWARD_FUNCS`)
    ``cue_grounding``: 1.0 when the ``<think>`` block claims exactly the modalities the record's
    ``cue`` column names (``r1omni_fast.grounding``), else 0.0; None ("not scored") for a record
    without one. ``think_emotion``: ERV's explanation reward, the share of the reasoning's
    non-neutral sentences whose emotion is the record's label
    (``r1omni_fast.reasoning_emotion.sentence_agreements``; :func:`make_think_emotion` for another
    classifier).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import labels as _labels

if TYPE_CHECKING:
    from ._native import RewardScorer

__all__ = [
    "ALL_LABELS",
    "MODES",
    "Parsed",
    "REWARD_FUNCS",
    "accuracy_reward",
    "completion_text",
    "cue_grounding",
    "make_think_emotion",
    "think_emotion",
    "extract_answers",
    "format_reward",
    "parse_completion",
    "score_batch",
    "weighted_total",
]

#: Accuracy modes.
MODES: Tuple[str, ...] = ("r1omni", "robust")

#: The robust mode's label set when none is given: every built-in label, with the aliases.
ALL_LABELS = _labels.LabelSet(
    tuple(dict.fromkeys(label for labels in _labels.BUILTIN.values() for label in labels)),
    _labels.ALIASES,
)

RewardFunc = Callable[..., Sequence[Optional[float]]]


class Parsed(NamedTuple):
    """The parts of a completion (see :func:`parse_completion`)."""

    think: Optional[str]
    answer: Optional[str]
    well_formed: bool


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as is, or the first message's content of a chat
    completion (a content given as parts contributes its text parts, joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[0], dict):
        content = completion[0].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, (list, tuple)):
            return "".join(_part_text(p) for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise TypeError(
        f"a completion must be a str or a chat-message list [{{'role': ..., 'content': ...}}], "
        f"got {type(completion).__name__}: {completion!r:.120}"
    )


def _part_text(part: dict) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        raise TypeError(f"a chat-message content part of type 'text' needs a str 'text' field, got "
                        f"{'no such field' if 'text' not in part else type(text).__name__}: {part!r:.120}")
    return text


def _texts(completions: Sequence[Any]) -> list:
    if isinstance(completions, str):
        raise TypeError("completions must be a list of completions, got one str")
    if type(completions) is not list:
        completions = list(completions)
    if all(type(c) is str for c in completions):  # the common case, checked cheaply
        return completions
    return [completion_text(c) for c in completions]


_SCORERS: Dict[tuple, "RewardScorer"] = {}


def _scorer(mode: str, labels: Any = None) -> "RewardScorer":
    """The native scorer for ``mode`` and ``labels``, built once per distinct label set."""
    from ._native import RewardScorer

    if mode not in MODES:
        raise ValueError(f"unknown accuracy mode {mode!r}: use one of {list(MODES)}")
    if mode == "r1omni":
        key: tuple = ("r1omni",)
        if key not in _SCORERS:
            _SCORERS[key] = RewardScorer("r1omni")
        return _SCORERS[key]
    label_set = ALL_LABELS if labels is None else _labels.resolve_closed(labels)
    key = ("robust", label_set.labels, tuple(sorted(label_set.aliases.items())))
    if key not in _SCORERS:
        _SCORERS[key] = RewardScorer("robust", list(label_set.labels), dict(label_set.aliases))
    return _SCORERS[key]


def parse_completion(text: Any) -> Parsed:
    """``Parsed(think, answer, well_formed)`` of one completion.

    ``well_formed`` is the format reward as a bool. When it holds, ``think`` and ``answer`` are
    the groups of ``<think>(.*?)</think>\\s*<answer>(.*?)</answer>`` (full match, DOTALL);
    otherwise each is group 1 of the first DOTALL search for its own tag pair, or None when
    absent. Both are stripped.
    """
    from ._native import parse_completion as _parse

    return Parsed(*_parse(completion_text(text)))


def extract_answers(completions: Sequence[Any], *, mode: str = "robust", labels: Any = None) -> list:
    """The answer of each completion as the accuracy reward reads it (for evaluation).

    Mode "robust": the label the answer names, or None. Mode "r1omni": R1-Omni's stripped answer
    text (never None). The accuracy reward is 1.0 exactly when a completion's answer equals its
    solution's.
    """
    return _scorer(mode, labels).answers(_texts(completions))


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list:
    """1.0 per completion that is well formed, else 0.0 (TRL reward-function signature)."""
    return _scorer("r1omni").score(_texts(completions), format=True, accuracy=False)["format"].tolist()


def accuracy_reward(
    completions: Sequence[Any], solution: Sequence[str], *, mode: str = "robust", labels: Any = None, **kwargs: Any
) -> list:
    """1.0 per completion whose answer matches its solution, else 0.0 (TRL signature).

    ``mode`` is "robust" or "r1omni"; ``labels`` (robust only) a dataset name, a list of labels
    or a ``LabelSet``. The semantics of each mode are in the module docstring.
    """
    scorer = _scorer(mode, labels)
    return scorer.score(_texts(completions), list(solution), format=False, accuracy=True)["accuracy"].tolist()


def score_batch(
    completions: Sequence[Any],
    solution: Optional[Sequence[str]] = None,
    *,
    funcs: Sequence[Union[str, RewardFunc]] = ("accuracy", "format"),
    weights: Optional[Sequence[float]] = None,
    mode: str = "robust",
    labels: Any = None,
    **columns: Any,
) -> Dict[str, np.ndarray]:
    """All reward columns of a batch at once, plus ``"total"``.

    ``funcs`` holds "accuracy", "format" (scored together in one parallel native pass) and any
    TRL-style callables, called with keyword arguments only, as TRL calls them:
    ``f(completions=completions, solution=solution, **columns)``; an ``async def`` function is
    awaited (all of them concurrently); a callable's column is keyed by its ``__name__``, and
    None entries it returns become NaN. ``completions`` may be strings or chat messages
    (``[{"role": "assistant", "content": text}]``). Each column is a
    float64 array of length ``len(completions)``;
    ``total = nansum_i(weights[i] * column_i)`` (weights default to 1, NaN skipped, as TRL does).
    """
    if not funcs:
        raise ValueError("funcs is empty: name at least one reward ('accuracy', 'format' or a callable)")
    weights = [1.0] * len(funcs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(funcs):
        raise ValueError(f"got {len(weights)} weights for {len(funcs)} reward functions: pass one per function")
    names = []
    funcs = [REWARD_FUNCS.get(f, f) if isinstance(f, str) else f for f in funcs]
    for f in funcs:
        if isinstance(f, str):
            if f not in ("accuracy", "format"):
                raise ValueError(f"unknown reward {f!r}: use 'accuracy', 'format', one of {sorted(REWARD_FUNCS)} "
                                 "or a callable")
            names.append(f)
        elif callable(f):
            names.append(getattr(f, "__name__", type(f).__name__))
        else:
            raise TypeError(f"a reward function must be a name or a callable, got {type(f).__name__}")
    if len(set(names)) != len(names) or "total" in names:
        raise ValueError(f"reward names must be distinct and not 'total', got {names}: rename the callables")

    texts = _texts(completions)
    want_accuracy, want_format = "accuracy" in names, "format" in names
    out: Dict[str, np.ndarray] = {}
    if want_accuracy or want_format:
        if want_accuracy and solution is None:
            raise ValueError("the accuracy reward needs `solution`: one ground truth per completion")
        scorer = _scorer(mode, labels) if want_accuracy else _scorer("r1omni")
        sols = list(solution) if want_accuracy and solution is not None else None
        out.update(scorer.score(texts, sols, format=want_format, accuracy=want_accuracy))
    results: Dict[str, Any] = {}
    pending = {}
    for f, name in zip(funcs, names):
        if callable(f):  # keyword arguments only, as TRL calls them
            value = f(completions=completions, solution=solution, **columns)
            if inspect.isawaitable(value):
                pending[name] = value
            else:
                results[name] = value
    if pending:
        results.update(_await_all(pending))
    for name, values in results.items():
        col = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        if col.shape != (len(texts),):
            raise ValueError(f"reward function {name!r} returned {col.shape[0]} values for {len(texts)} completions")
        out[name] = col
    out["total"] = weighted_total([out[name] for name in names], weights)
    return out


def _await_all(pending: Dict[str, Any]) -> Dict[str, Any]:
    """Await the coroutines of async reward functions concurrently, on an event loop of their own
    in a helper thread (so that it works whether or not the caller runs a loop, as in Jupyter)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def gather() -> list:
        return list(await asyncio.gather(*pending.values()))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="r1omni-async-rewards") as pool:
        values = pool.submit(asyncio.run, gather()).result()
    return dict(zip(pending.keys(), values))


def weighted_total(columns: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``sum_i weights[i] * columns[i]`` per completion (float64), a NaN entry ("not scored")
    counting as 0, as TRL does."""
    total = np.zeros(len(columns[0]), dtype=np.float64)
    for w, col in zip(weights, columns):
        total += np.nan_to_num(w * col, nan=0.0)
    return total


# --------------------------------------------------------------------------- reasoning rewards


def cue_grounding(completions: Sequence[Any], cue: Optional[Sequence[Any]] = None, **kwargs: Any) -> list:
    """1.0 per completion whose ``<think>`` block claims exactly the modalities its record's
    ``cue`` names, 0.0 when it claims others (or none, or has no ``<think>``), None ("not scored")
    where the record has no ``cue`` (TRL signature; ``cue`` is the data column).

    Claims and cue values: ``r1omni_fast.grounding`` (``CueLexicon.claimed``, ``parse_cue``).
    Raises ValueError naming the completion's index for a cue value that names no modality.
    """
    from .grounding import DEFAULT_LEXICON, parse_cue

    texts = _texts(completions)
    cues = [None] * len(texts) if cue is None else list(cue)
    if len(cues) != len(texts):
        raise ValueError(f"cue_grounding: {len(cues)} cue values for {len(texts)} completions")
    out: list = []
    for i, (text, value) in enumerate(zip(texts, cues)):
        truth = parse_cue(value, where=f"cue_grounding, completion {i}")
        out.append(None if truth is None else float(DEFAULT_LEXICON.claimed(parse_completion(text).think) == truth))
    return out


def make_think_emotion(classifier: Any = None, labels: Any = None, *, name: str = "think_emotion") -> RewardFunc:
    """A ``think_emotion`` reward with its own reasoning classifier (a spec of
    ``r1omni_fast.reasoning_emotion.load_classifier``: None/"lexicon", a folder, "module:function")
    and label set (default: every built-in label). The classifier is loaded at the first call
    (ClassifierError then for a bad spec). To use it in ``reward_funcs``, bind it in a module of
    yours (``think_emotion = make_think_emotion("models/emotion-clf")``) and list
    ``my_module:think_emotion``."""
    from .reasoning_emotion import load_classifier, sentence_agreements

    label_set = ALL_LABELS if labels is None else _labels.resolve_closed(labels)
    loaded: list = []

    def reward(completions: Sequence[Any], label: Optional[Sequence[Any]] = None,
               solution: Optional[Sequence[str]] = None, **kwargs: Any) -> list:
        texts = _texts(completions)
        if label is None:
            if solution is None:
                raise ValueError(f"{name}: needs the `label` (or `solution`) column")
            label = [parse_completion(s).answer or str(s).strip() for s in solution]
        truths = []
        for i, value in enumerate(label):
            canonical = label_set.canonical(str(value)) if value is not None else None
            if canonical is None:
                raise ValueError(f"{name}: the label {value!r} of completion {i} names no label of the reward's set "
                                 f"{list(label_set.labels)}: pass labels= to make_think_emotion")
            truths.append(canonical)
        if not loaded:
            loaded.append(load_classifier(classifier, label_set))
        return sentence_agreements([parse_completion(t).think for t in texts], truths, loaded[0])

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = (f"ERV's explanation reward with the {classifier or 'lexicon'} classifier: per completion, the "
                      "share of the <think> block's non-neutral sentences whose emotion is the record's label "
                      "(r1omni_fast.reasoning_emotion.sentence_agreements); TRL signature.")
    return reward


#: ERV's explanation reward with the lexicon classifier over every built-in label.
think_emotion = make_think_emotion()

#: Reward functions by the short name ``reward_funcs`` accepts (besides "accuracy" and "format",
#: which are scored natively).
REWARD_FUNCS: Dict[str, RewardFunc] = {"cue_grounding": cue_grounding, "think_emotion": think_emotion}
