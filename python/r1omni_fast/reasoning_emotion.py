"""The emotion a piece of reasoning expresses, by a pluggable text classifier.

Used by the think-emotion reward (``r1omni_fast.rewards.think_emotion``) and by evaluation's
think–answer consistency (``r1omni_fast.eval.faithfulness``), after ERV (Rha et al. 2026,
"Emotion-Coherent Reasoning for Multimodal LLMs via Emotional Rationale Verifier", AAAI; its
verifier is a text emotion classifier run over the reasoning).

A classifier is a callable ``texts -> labels``: a list of str in, one label of the label set (or
None: the text expresses no emotion of the set) per text out. :func:`load_classifier` builds one
from a spec:

- ``None`` or ``"lexicon"``: :class:`LexiconClassifier`, the label set's names plus their aliases
  (``r1omni_fast.labels.ALIASES``) plus :data:`SYNONYMS`, matched as whole words; the label named
  most often wins, ties going to the label named first; no emotion word gives None. Needs nothing
  to download, and sees only what the words say (no negation, no irony).
- a folder: a local transformers sequence classifier (``AutoModelForSequenceClassification`` +
  ``AutoTokenizer``); each text gets the class of the largest logit, whose ``id2label`` name is
  mapped onto the label set (``LabelSet.canonical``: exact, lower-cased or an alias, so GoEmotions'
  ``joy``, ``anger``, ``sadness`` map to happy, angry, sad); a class naming no label of the set
  gives None.
- ``"module:function"``: an importable callable, ``function(texts) -> labels``; each label it
  returns is mapped onto the label set as above, and one that names no label is a ValueError.

:func:`load_classifier` checks the spec before anything is generated: a folder that is not a
sequence classifier, an ``id2label`` of which no class names a label, a callable that cannot be
imported, each raise :class:`ClassifierError` naming the spec and what to give instead.
"""

from __future__ import annotations

import importlib
import os
import re
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Sequence

from r1omni_fast import labels as label_sets

Classifier = Callable[[Sequence[str]], List[Optional[str]]]

#: Emotion words beyond the label names and ``labels.ALIASES``, by the label they express (used
#: only when that label is in the set).
SYNONYMS: Dict[str, tuple] = {
    "happy": ("cheerful", "delighted", "pleased", "joyous", "elated", "excited", "excitement", "cheer"),
    "sad": ("sorrowful", "gloomy", "tearful", "grief", "grieving", "melancholy", "miserable", "upset"),
    "angry": ("furious", "irritated", "annoyed", "rage", "enraged", "hostile", "irate"),
    "fear": ("terrified", "terror", "panic", "panicked", "alarmed", "dread"),
    "surprise": ("amazed", "shocked", "startled", "stunned", "amazement"),
    "disgust": ("repulsed", "revolted", "revulsion", "disgustful"),
    "neutral": ("expressionless", "impassive", "indifferent"),
    "contemptuous": ("scornful", "disdainful", "disdain", "scorn", "sneering"),
    "disappointed": ("letdown", "disillusioned", "dismayed"),
    "helpless": ("powerless", "hopeless", "resigned"),
    "anxious": ("worried", "nervous", "uneasy", "worry", "tense"),
    "calm": ("relaxed", "serene", "peaceful", "tranquil"),
}

LEXICON = "lexicon"
_WORD = re.compile(r"[a-z]+")


class ClassifierError(ValueError):
    """A reasoning classifier spec that cannot be used; the message names it and the fix."""


class LexiconClassifier:
    """Emotion words of ``label_set`` counted per text (module docstring)."""

    def __init__(self, label_set: Any = None) -> None:
        self.label_set = label_sets.resolve_closed(label_set) if not isinstance(label_set, label_sets.LabelSet) \
            else label_set
        words: Dict[str, str] = {}
        for label in self.label_set.labels:
            words[label] = label
            for synonym in SYNONYMS.get(label, ()):
                words.setdefault(synonym, label)
        for alias, target in self.label_set.aliases.items():
            if target in self.label_set.labels:
                words.setdefault(alias, target)
        self.words = words

    def __call__(self, texts: Sequence[str]) -> List[Optional[str]]:
        return [self.classify(t) for t in texts]

    def classify(self, text: Optional[str]) -> Optional[str]:
        """The label of ``text`` (most mentions, ties to the first mentioned), or None."""
        hits = [self.words[w] for w in _WORD.findall((text or "").lower()) if w in self.words]
        if not hits:
            return None
        counts = Counter(hits)
        best = max(counts.values())
        return next(h for h in hits if counts[h] == best)


class TransformersClassifier:
    """A local ``AutoModelForSequenceClassification`` folder, argmax class mapped onto the label set."""

    def __init__(self, folder: str, label_set: Any, *, device: Any = None, batch_size: int = 32,
                 max_length: int = 512) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self.folder = os.fspath(folder)
        self.label_set = label_set
        what = f"reasoning classifier {self.folder!r}"
        fix = ("give a folder saved from a ...ForSequenceClassification model (config.json with id2label, weights, "
               "tokenizer), a module:function, or 'lexicon'")
        if not os.path.isfile(os.path.join(self.folder, "config.json")):
            raise ClassifierError(f"{what} has no config.json: {fix}")
        try:
            config = AutoConfig.from_pretrained(self.folder)
        except (ValueError, KeyError, OSError) as exc:
            raise ClassifierError(f"{what}: transformers cannot read its config.json ({exc}): {fix}") from None
        architectures = list(getattr(config, "architectures", None) or [])
        if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise ClassifierError(f"{what} is a {', '.join(architectures)}, not a sequence classifier: {fix}")
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(self.folder)
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        except (ValueError, KeyError, OSError, TypeError) as exc:
            raise ClassifierError(f"{what} cannot be loaded as AutoModelForSequenceClassification + "
                                  f"AutoTokenizer ({exc}): {fix}") from None
        id2label = {int(k): str(v) for k, v in (self.model.config.id2label or {}).items()}
        self.classes = [label_set.canonical(id2label.get(i, "")) for i in range(self.model.config.num_labels)]
        if not any(self.classes):
            raise ClassifierError(
                f"{what}: none of its classes {sorted(id2label.values())[:8]} names a label of {list(label_set.labels)} "
                "(or an alias): set id2label in its config.json to the emotion names")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> List[Optional[str]]:
        import torch

        out: List[Optional[str]] = []
        for i in range(0, len(texts), self.batch_size):
            chunk = [t or "" for t in texts[i:i + self.batch_size]]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length).to(self.device)
            with torch.no_grad():
                logits = self.model(**enc).logits
            out += [self.classes[j] for j in logits.argmax(-1).tolist()]
        return out


class CallableClassifier:
    """A user callable ``texts -> labels`` whose labels are mapped onto the label set."""

    def __init__(self, spec: str, fn: Callable[[Sequence[str]], Sequence[Any]], label_set: Any) -> None:
        self.spec, self.fn, self.label_set = spec, fn, label_set

    def __call__(self, texts: Sequence[str]) -> List[Optional[str]]:
        raw = list(self.fn(list(texts)))
        if len(raw) != len(texts):
            raise ClassifierError(f"reasoning classifier {self.spec!r} returned {len(raw)} labels for {len(texts)} "
                                  "texts: return one label (or None) per text")
        out: List[Optional[str]] = []
        for value in raw:
            if value is None:
                out.append(None)
                continue
            label = self.label_set.canonical(value) if isinstance(value, str) else None
            if label is None:
                raise ClassifierError(f"reasoning classifier {self.spec!r} returned {value!r}, which names no label of "
                                      f"{list(self.label_set.labels)}: return one of them (or an alias), or None")
            out.append(label)
        return out


def load_classifier(spec: Any = None, label_set: Any = None, *, device: Any = None) -> Classifier:
    """A classifier from ``spec`` (module docstring): None/"lexicon", a folder, "module:function",
    a callable (its labels mapped onto the set), or a classifier this function returned (as is). ``label_set``: anything
    ``labels.resolve_closed`` takes, or a ``LabelSet``. Raises :class:`ClassifierError`."""
    if isinstance(spec, (LexiconClassifier, TransformersClassifier, CallableClassifier)):
        return spec  # already loaded
    labels = label_set if isinstance(label_set, label_sets.LabelSet) else label_sets.resolve_closed(label_set)
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == LEXICON):
        return LexiconClassifier(labels)
    if callable(spec):
        return CallableClassifier(getattr(spec, "__name__", repr(spec)), spec, labels)
    text = os.fspath(spec)
    if os.path.isdir(text):
        return TransformersClassifier(text, labels, device=device)
    module_name, sep, attr = text.partition(":")
    if not sep or not module_name or not attr or os.sep in module_name:
        raise ClassifierError(f"reasoning classifier {text!r} is neither a folder nor module:function: give a "
                              "local transformers sequence-classification folder, an importable module:function "
                              "(texts -> labels), or 'lexicon'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ClassifierError(f"reasoning classifier {text!r} cannot be imported ({exc}): give an importable "
                              "module:function (texts -> labels), a folder, or 'lexicon'") from None
    if not callable(fn):
        raise ClassifierError(f"reasoning classifier {text!r} is not callable: it must be a function texts -> labels")
    return CallableClassifier(text, fn, labels)


def sentence_agreements(thinks: Sequence[Optional[str]], labels: Sequence[str], classifier: Classifier) -> List[float]:
    """ERV's explanation reward per trace: the share of its non-neutral sentences whose emotion
    (``classifier``, one call for all sentences of all traces) is the trace's label.

    Sentences: ``r1omni_fast.grounding.sentences``. A sentence is neutral when its emotion is
    None or ``"neutral"``. ``score = matches / non_neutral``; when the label is ``"neutral"``,
    ``score = neutral sentences / sentences`` (ERV's rule: a neutral clip's sentences should be
    neutral); 0.0 for a trace with no sentence (no ``<think>``) or no non-neutral one. ERV keeps
    up to two emotions per sentence (sigmoid above 0.1); here each sentence has one.
    """
    from r1omni_fast.grounding import sentences

    if len(thinks) != len(labels):
        raise ValueError(f"{len(thinks)} traces but {len(labels)} labels")
    parts = [sentences(t) for t in thinks]
    flat = classifier([s for p in parts for s in p]) if any(parts) else []
    scores, at = [], 0
    for p, label in zip(parts, labels):
        emotions, at = flat[at:at + len(p)], at + len(p)
        if not p:
            scores.append(0.0)
        elif label == "neutral":
            scores.append(sum(e in (None, "neutral") for e in emotions) / len(p))
        else:
            non_neutral = [e for e in emotions if e not in (None, "neutral")]
            scores.append(sum(e == label for e in non_neutral) / len(non_neutral) if non_neutral else 0.0)
    return scores


def describe(spec: Any) -> str:
    """What metrics.json records as the classifier: "lexicon", the folder, or the callable's name."""
    if spec is None:
        return LEXICON
    if callable(spec):
        return getattr(spec, "__name__", repr(spec))
    return os.fspath(spec)


__all__ = ["Classifier", "ClassifierError", "LexiconClassifier", "TransformersClassifier", "CallableClassifier",
           "load_classifier", "sentence_agreements", "describe", "SYNONYMS"]
