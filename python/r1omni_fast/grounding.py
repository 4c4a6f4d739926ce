"""Which modalities a reasoning trace claims, and which modalities a record says carry its label.

Shared by the grounding reward (``r1omni_fast.rewards.cue_grounding``) and the faithfulness
metrics of evaluation (``r1omni_fast.eval.faithfulness``), so that both read a trace alike.

Claims (:meth:`CueLexicon.claimed`): the trace is split into sentences (after ``.``, ``!``, ``?``
or ``;`` followed by whitespace, or at a newline); each sentence is lower-cased and split into
words (``[a-z]+``). A sentence claims ``video`` when one of its words is in the visual word list,
``audio`` when one is in the auditory list, and nothing at all when one of its words is a
negation (``no``, ``not``, ``without``, ``silent``, ...): "The audio track is silent, so the sound
gives no cue" names the sound but does not claim it (a sentence-level version of NegEx's rule,
Chapman et al. 2001, "A simple algorithm for identifying negated findings and diseases in
discharge summaries"). The trace claims the union over its sentences. The word lists are
configurable (:meth:`CueLexicon.from_file`); the default lists are those of
``r1omni_fast.eval.cues``, which leave out words that describe both senses.

Ground truth (:func:`parse_cue`): a record field (``cue`` by default; the synthetic data writes
it) naming the modalities that carry the label: ``"video"`` (or ``"visual"``), ``"audio"`` (or
``"auditory"``), ``"both"``, a combination joined by ``+`` or ``,`` (``"video+audio"``), or a JSON
list of those names (``["video", "audio"]``). A missing or null field means "not known".
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, FrozenSet, Iterable, Optional, Tuple

#: Words that refer to what is seen: the face, the body, the picture.
VISUAL_WORDS = frozenset("""
    face faces facial expression expressions eye eyes eyebrow eyebrows brow brows forehead
    mouth lips lip smile smiles smiling frown frowns frowning grin grinning gaze gazing stare
    staring glare glaring look looks looking looked appear appears appearance see sees seen
    saw visible visual visually tears teeth jaw cheeks nose gesture gestures posture body
    pose head nod nodding picture image images frame frames video colour color scene
""".split())

#: Words that refer to what is heard: the voice, its pitch and rhythm, the sound track.
AUDITORY_WORDS = frozenset("""
    voice voices vocal vocally tone tones pitch pitched intonation prosody sound sounds
    sounded sounding audio audible hear hears heard hearing listen listening speech speak
    speaks speaking spoke said say says saying loud loudly quiet quietly whisper
    whispering shout shouting yell yelling scream screaming sigh sighing beep beeps buzzing
    hum humming volume noise music acoustic rhythm
""".split())

#: Words that make a sentence claim nothing (``[a-z]+`` splits "isn't" into "isn" and "t").
NEGATION_WORDS = frozenset("""
    no not nothing none neither nor never without absent lacks lacking silent silence
    isn doesn don didn wasn aren cannot
""".split())

#: The modalities a claim or a cue names, in this order.
MODALITIES: Tuple[str, ...] = ("video", "audio")

#: The record field that names the modalities carrying the label (the synthetic data's).
CUE_FIELD = "cue"

_WORD = re.compile(r"[a-z]+")
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
_CUE_NAMES = {"video": "video", "visual": "video", "audio": "audio", "auditory": "audio"}


def sentences(text: Optional[str]) -> list:
    """The non-empty sentences of ``text`` (split after ``.!?;`` + whitespace, or at newlines),
    stripped; ``[]`` for None or blank text."""
    if not text:
        return []
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


@dataclass(frozen=True)
class CueLexicon:
    """The word lists that decide which modalities a trace claims (module docstring)."""

    visual: FrozenSet[str] = VISUAL_WORDS
    auditory: FrozenSet[str] = AUDITORY_WORDS
    negations: FrozenSet[str] = NEGATION_WORDS

    def __post_init__(self) -> None:
        for name in ("visual", "auditory", "negations"):
            words = getattr(self, name)
            if isinstance(words, str):
                raise TypeError(f"CueLexicon.{name} must be a collection of words, not one str")
            cleaned = frozenset(str(w).strip().lower() for w in words)
            bad = sorted(w for w in cleaned if not _WORD.fullmatch(w))
            if bad:
                raise ValueError(f"CueLexicon.{name}: {bad[:5]} are not single words of letters a-z "
                                 "(traces are split into [a-z]+ words, so such entries would never match)")
            object.__setattr__(self, name, cleaned)
        both = self.visual & self.auditory
        if both:
            raise ValueError(f"words in both the visual and the auditory list: {sorted(both)[:5]}: a word must "
                             "name one sense")

    @classmethod
    def from_file(cls, path: "str | os.PathLike[str]") -> "CueLexicon":
        """A lexicon from a JSON file ``{"visual": [...], "auditory": [...], "negations": [...]}``;
        a key left out keeps its default list. Raises ValueError naming the file for anything else."""
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cue lexicon {os.fspath(path)!r} cannot be read as JSON: {exc}") from None
        allowed = {"visual", "auditory", "negations"}
        if not isinstance(data, dict) or not data or set(data) - allowed or not all(
                isinstance(v, list) for v in data.values()):
            raise ValueError(f"cue lexicon {os.fspath(path)!r}: expected a JSON object with word lists under "
                             f"{sorted(allowed)}, e.g. {{\"visual\": [\"face\", \"smile\"], \"auditory\": [\"voice\"]}}")
        try:
            return cls(**{k: frozenset(v) for k, v in data.items()})
        except ValueError as exc:
            raise ValueError(f"cue lexicon {os.fspath(path)!r}: {exc}") from None

    def claimed(self, trace: Optional[str]) -> FrozenSet[str]:
        """The modalities (subset of ``{"video", "audio"}``) that ``trace`` claims: the union
        over its sentences without a negation word of the senses their words name."""
        found = set()
        for sentence in sentences(trace):
            words = set(_WORD.findall(sentence.lower()))
            if words & self.negations:
                continue
            if words & self.visual:
                found.add("video")
            if words & self.auditory:
                found.add("audio")
        return frozenset(found)


DEFAULT_LEXICON = CueLexicon()


def parse_cue(value: Any, *, where: str = "a record") -> Optional[FrozenSet[str]]:
    """The modalities a cue field names (module docstring), or None for a missing/null field.

    Raises ValueError naming ``where`` (e.g. the record id and field), the value and the accepted
    values for anything else (an unknown name, an empty list, a number)."""
    if value is None:
        return None
    names: Iterable[Any]
    if isinstance(value, str):
        text = value.strip().lower()
        names = ["video", "audio"] if text == "both" else re.split(r"\s*[+,]\s*", text)
    elif isinstance(value, (list, tuple)):
        names = [str(v).strip().lower() if isinstance(v, str) else v for v in value]
    else:
        names = [value]
    found = set()
    for name in names:
        if not isinstance(name, str) or name not in _CUE_NAMES:
            raise ValueError(
                f"{where}: cue {value!r} names no modality: use \"video\" (or \"visual\"), \"audio\" (or "
                f"\"auditory\"), \"both\", \"video+audio\" or a list of those, or leave the field out where it is "
                "not known")
        found.add(_CUE_NAMES[name])
    if not found:
        raise ValueError(f"{where}: cue {value!r} is empty: name the modalities that carry the label, or leave "
                         "the field out")
    return frozenset(found)


def cue_name(modalities: Optional[FrozenSet[str]]) -> str:
    """``"video"``, ``"audio"``, ``"both"`` or ``"neither"`` for a set of modalities (None: "neither")."""
    if not modalities:
        return "neither"
    if len(modalities) == 2:
        return "both"
    return next(iter(modalities))
