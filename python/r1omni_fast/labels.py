"""Emotion label sets and the inflections that map onto them.

The single source of truth for label names: the data reader validates records against these
sets, the robust accuracy reward maps free-text answers onto them (the native scorer receives
them as arguments), and evaluation orders its confusion matrix by them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

#: DFEW's seven classes, in the order R1-Omni lists them.
DFEW: tuple[str, ...] = ("happy", "surprise", "neutral", "angry", "disgust", "sad", "fear")

#: MAFW's eleven classes: DFEW's seven plus four compound emotions.
MAFW: tuple[str, ...] = DFEW + ("contemptuous", "disappointed", "helpless", "anxious")

#: RAVDESS's eight classes after mapping its names onto DFEW's (fearful -> fear,
#: surprised -> surprise); calm has no DFEW counterpart and stays a class of its own.
RAVDESS: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")

#: Dataset names accepted wherever a label set is chosen by name.
BUILTIN: Mapping[str, tuple[str, ...]] = {"dfew": DFEW, "mafw": MAFW, "ravdess": RAVDESS}

#: The open label set's name: any answer is a label (SFT data with open-vocabulary answers).
ANY = "any"

#: Common inflections and synonyms -> canonical label. Applied after lower-casing and trimming
#: punctuation; a word maps only if its target is in the label set in use.
ALIASES: Mapping[str, str] = {
    "happiness": "happy", "joy": "happy", "joyful": "happy", "glad": "happy",
    "surprised": "surprise", "surprising": "surprise", "astonished": "surprise",
    "neutrality": "neutral",
    "anger": "angry", "angered": "angry", "mad": "angry",
    "disgusted": "disgust", "disgusting": "disgust",
    "sadness": "sad", "unhappy": "sad", "sorrow": "sad",
    "fearful": "fear", "afraid": "fear", "scared": "fear", "frightened": "fear",
    "contempt": "contemptuous",
    "disappointment": "disappointed",
    "helplessness": "helpless",
    "anxiety": "anxious",
    "calmness": "calm",
}


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of class names plus the aliases that map onto them.

    An ``open`` set (``label_set: any``, for SFT data such as EMER's open-vocabulary cold-start
    records) also accepts any other non-empty answer, lower-cased, as a label of its own.
    """

    labels: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    open: bool = False

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("a label set needs at least one label")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"duplicate labels in {list(self.labels)}")

    def canonical(self, word: str) -> str | None:
        """The label ``word`` names (exact, lower-cased, or via an alias), else None."""
        w = word.strip().lower()
        if w in self.labels:
            return w
        target = self.aliases.get(w)
        if target in self.labels:
            return target
        return w if self.open and w else None

    def opened(self) -> LabelSet:
        """This set, open: answers outside it are kept as labels of their own."""
        return replace(self, open=True)


def resolve_closed(spec: str | Sequence[str] | LabelSet | None, default: str = "dfew") -> LabelSet:
    """:func:`resolve` for scoring (rewards, evaluation): ValueError for the open set, whose answers
    cannot be told right from wrong."""
    label_set = resolve(spec, default)
    if label_set.open:
        raise ValueError(f"label set {ANY!r} accepts any answer (SFT data only); scoring needs a closed set: "
                         f"use one of {sorted(BUILTIN)} or a list of labels")
    return label_set


def resolve(spec: str | Sequence[str] | LabelSet | None, default: str = "dfew") -> LabelSet:
    """A LabelSet from a dataset name ("dfew", "mafw", "ravdess"), a list of labels, a LabelSet,
    or "any": the open set (every built-in label and alias, plus any other answer as its own label).

    Raises ValueError naming the unknown dataset and the accepted names.
    """
    if isinstance(spec, LabelSet):
        return spec
    if spec is None:
        spec = default
    if isinstance(spec, str) and spec.strip().lower() == ANY:
        return LabelSet(tuple(dict.fromkeys(x for labels in BUILTIN.values() for x in labels)), ALIASES, open=True)
    if isinstance(spec, str):
        try:
            labels = BUILTIN[spec.lower()]
        except KeyError:
            raise ValueError(
                f"unknown label set {spec!r}: use one of {sorted(BUILTIN)}, a list of labels, or "
                f"{ANY!r} (SFT only: any answer)"
            ) from None
        return LabelSet(labels, ALIASES)
    labels = tuple(str(x).strip().lower() for x in spec)
    return LabelSet(labels, ALIASES)
