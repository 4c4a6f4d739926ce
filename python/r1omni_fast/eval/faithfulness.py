"""Judge-free faithfulness of the reasoning traces: does the ``<think>`` block explain the answer?

Computed from evaluation rows (``r1omni_fast.eval.runner.score_rows``: ``think``, ``prediction``,
``label`` and, where the record has one, ``cue``); no language-model judge.

Cue agreement (:func:`cue_agreement`; records with a cue field, e.g. the synthetic data's)
    ``agreement = #{rows : claimed(think) == cue} / #{rows with a cue}`` where ``claimed`` is the
    set of modalities the trace claims (``r1omni_fast.grounding.CueLexicon.claimed``) and ``cue``
    the set the record says carries the label (``r1omni_fast.grounding.parse_cue``). With the
    true-cue x claimed-cue confusion table (``video`` / ``audio`` / ``both`` / ``neither``) and
    the agreement per true cue. None ("n/a") when no row has a cue.

Think-answer consistency (:func:`think_answer_consistency`; after ERV, Rha et al. 2026,
"Emotion-Coherent Reasoning for Multimodal LLMs via Emotional Rationale Verifier")
    The emotion the whole trace expresses, ``e = classifier(think)``
    (``r1omni_fast.reasoning_emotion``; default: the label set's word lexicon).
    ``answer_consistency = #{rows : e == prediction} / n`` (ERV's EPC: the explanation agrees with
    the prediction), ``label_consistency = #{rows : e == label} / n`` (ERV's EEA: the explanation
    expresses the true emotion); ``expressed = #{rows : e is not None} / n``. A row without a
    trace, or whose trace names no emotion, counts against both.

Counterfactual attribution (:func:`counterfactual_attribution`; the modality ablation passes,
``r1omni-fast eval --ablate``)
    For each clip, the modalities its full-input trace claims, and the answers with video removed
    (the audio-only pass) and with audio removed (the video-only pass). ``cited_change_rate`` =
    the share of (clip, cited modality) pairs whose removal changes the answer;
    ``uncited_change_rate`` = the same over the modalities the trace does not cite;
    ``unfaithful_claims = 1 - cited_change_rate``: a cited modality whose removal leaves the answer
    unchanged did not carry it (attribution by input erasure, as in Jacovi & Goldberg 2020,
    "Towards Faithfully Interpretable NLP Systems", and DeYoung et al. 2020, ERASER's
    comprehensiveness). Greedy decoding makes each pass deterministic, so one pass per setting.

Early answering (:func:`early_answering`; Lanham et al. 2023, "Measuring Faithfulness in
Chain-of-Thought Reasoning", section 2.1; ``r1omni-fast eval --early-answering``)
    Each clip is answered again with its own trace cut short: the assistant turn is forced to
    ``<think>`` + the first ``floor(f * T)`` tokens of the trace + ``</think>\n<answer>`` (T = the
    trace's length in tokens of the model's tokenizer; ``f`` in :data:`EARLY_ANSWERING_CUTS`, 0, 0.5
    and 1) and the model writes the answer greedily. ``change_rate[f] = #{clips : early answer at f
    != the answer of the full generation} / #{clips with a <think> block}``. A trace the answer
    depends on gives a high rate at small ``f``; a rate near 0 at ``f = 0`` means the answer was
    fixed before the reasoning (post-hoc reasoning). At ``f = 1`` the trace is whole, so the rate
    there is a control: it is 0 unless re-reading the trace through the tokenizer changes the
    answer. Clips without a ``<think>`` block are left out and counted in ``no_trace``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from r1omni_fast.grounding import DEFAULT_LEXICON, CueLexicon, cue_name, parse_cue

CUE_NAMES = ("video", "audio", "both", "neither")
#: The cut fractions of early answering (module docstring): none, half and all of the trace.
EARLY_ANSWERING_CUTS = (0.0, 0.5, 1.0)


def cue_agreement(rows: Iterable[Mapping[str, Any]], lexicon: CueLexicon = DEFAULT_LEXICON) -> Optional[Dict[str, Any]]:
    """``{"n", "agreement", "by_cue": {true cue: agreement}, "confusion": {true cue: {claimed cue:
    count}}}`` over the rows with a ``cue`` (module docstring), or None when none has one.
    Raises ValueError naming the row id for a cue value that names no modality."""
    confusion: Dict[str, Dict[str, int]] = {}
    n = agree = 0
    for row in rows:
        truth = parse_cue(row.get("cue"), where=f"record {row.get('id')!r} (its cue field)")
        if truth is None:
            continue
        claimed = lexicon.claimed(row.get("think"))
        n += 1
        agree += claimed == truth
        line = confusion.setdefault(cue_name(truth), {c: 0 for c in CUE_NAMES})
        line[cue_name(claimed)] += 1
    if not n:
        return None
    by_cue = {cue: line.get(cue, 0) / sum(line.values()) for cue, line in confusion.items()}
    return {"n": n, "agreement": agree / n, "by_cue": by_cue, "confusion": confusion}


def think_answer_consistency(rows: Sequence[Mapping[str, Any]], classifier: Any = None,
                             label_set: Any = None) -> Dict[str, Any]:
    """``{"n", "answer_consistency", "label_consistency", "expressed", "classifier"}`` (module
    docstring). ``classifier``: a spec of ``r1omni_fast.reasoning_emotion.load_classifier`` (None:
    the lexicon of ``label_set``) or a loaded classifier. Raises ``ClassifierError`` for a spec
    that cannot be used."""
    from r1omni_fast.reasoning_emotion import load_classifier

    rows = list(rows)
    clf = load_classifier(classifier, label_set)
    emotions = clf([r.get("think") or "" for r in rows]) if rows else []
    n = len(rows)
    emotions = [e if r.get("think") else None for e, r in zip(emotions, rows)]

    def share(hits: Iterable[bool]) -> float:
        return sum(hits) / n if n else 0.0

    return {"n": n,
            "answer_consistency": share(e is not None and e == r.get("prediction") for e, r in zip(emotions, rows)),
            "label_consistency": share(e is not None and e == r.get("label") for e, r in zip(emotions, rows)),
            "expressed": share(e is not None for e in emotions),
            "classifier": classifier_name(clf)}


def classifier_name(classifier: Any) -> str:
    """What metrics.json records as a loaded reasoning classifier: "lexicon", its folder, or the
    callable's spec."""
    from r1omni_fast.reasoning_emotion import LEXICON, CallableClassifier, TransformersClassifier

    if isinstance(classifier, TransformersClassifier):
        return classifier.folder
    if isinstance(classifier, CallableClassifier):
        return classifier.spec
    return LEXICON


def counterfactual_attribution(full: Sequence[Mapping[str, Any]], without: Mapping[str, Sequence[Mapping[str, Any]]],
                               lexicon: CueLexicon = DEFAULT_LEXICON) -> Dict[str, Any]:
    """Attribution by erasure (module docstring). ``full``: the rows with every modality;
    ``without[m]``: the rows of the pass with modality ``m`` ("video" or "audio") removed, matched
    to ``full`` by ``id`` (clips missing from a pass are left out and counted in ``"unmatched"``).

    Returns ``{"clips", "cited", "uncited", "cited_change_rate", "uncited_change_rate",
    "unfaithful_claims", "unmatched"}``: the counts of (clip, modality) pairs and the rates (None
    where a count is 0)."""
    by_id = {m: {r["id"]: r for r in rows} for m, rows in without.items()}
    cited = uncited = cited_changed = uncited_changed = clips = unmatched = 0
    for row in full:
        claimed = lexicon.claimed(row.get("think"))
        others = {m: by_id[m].get(row["id"]) for m in by_id}
        if any(o is None for o in others.values()):
            unmatched += 1
            continue
        clips += 1
        for m, other in others.items():
            changed = other.get("prediction") != row.get("prediction")
            if m in claimed:
                cited += 1
                cited_changed += changed
            else:
                uncited += 1
                uncited_changed += changed
    cited_rate = cited_changed / cited if cited else None
    return {"clips": clips, "cited": cited, "uncited": uncited, "cited_change_rate": cited_rate,
            "uncited_change_rate": uncited_changed / uncited if uncited else None,
            "unfaithful_claims": None if cited_rate is None else 1.0 - cited_rate, "unmatched": unmatched}


def cut_key(fraction: float) -> str:
    """The key of a cut fraction in ``early_answers`` and ``change_rate``: ``"0"``, ``"0.5"``, ``"1"``."""
    return f"{float(fraction):g}"


def check_cuts(cuts: Iterable[float]) -> tuple:
    """``cuts`` as a tuple of floats; ValueError for an empty list or a fraction outside [0, 1]."""
    values = tuple(float(c) for c in cuts)
    if not values or any(not 0.0 <= c <= 1.0 for c in values):
        raise ValueError(f"early answering cuts {list(values)}: give fractions of the trace in [0, 1], "
                         f"e.g. {list(EARLY_ANSWERING_CUTS)}")
    return values


def cut_trace(ids: Sequence[int], fraction: float) -> List[int]:
    """The first ``floor(fraction * len(ids))`` token ids of a trace (module docstring)."""
    return list(ids[:math.floor(fraction * len(ids) + 1e-9)])


def early_answering(rows: Sequence[Mapping[str, Any]], cuts: Sequence[float] = EARLY_ANSWERING_CUTS
                    ) -> Dict[str, Any]:
    """Lanham et al.'s early answering over evaluation rows (module docstring). A row holds
    ``prediction`` (the full generation's) and ``early_answers``: ``{cut_key(f): prediction}`` for
    every cut, or None when its completion has no ``<think>`` block.

    Returns ``{"cuts": [f, ...], "clips", "no_trace", "change_rate": {cut_key(f): rate or None}}``
    (None when no clip has a trace). Raises ValueError naming the row id when a row lacks a cut."""
    cuts = check_cuts(cuts)
    keys = [cut_key(c) for c in cuts]
    clips = no_trace = 0
    changed = dict.fromkeys(keys, 0)
    for row in rows:
        early = row.get("early_answers")
        if early is None:
            no_trace += 1
            continue
        missing = [k for k in keys if k not in early]
        if missing:
            raise ValueError(f"record {row.get('id')!r} has no early answer at cut(s) {missing}")
        clips += 1
        for k in keys:
            changed[k] += early[k] != row.get("prediction")
    return {"cuts": list(cuts), "clips": clips, "no_trace": no_trace,
            "change_rate": {k: (changed[k] / clips if clips else None) for k in keys}}


def faithfulness(rows: Sequence[Mapping[str, Any]], *, classifier: Any = None, label_set: Any = None,
                 lexicon: CueLexicon = DEFAULT_LEXICON) -> Dict[str, Any]:
    """The metrics that need no extra generation: ``{"cue_agreement": dict or "n/a",
    "think_answer": dict}``."""
    agreement = cue_agreement(rows, lexicon)
    return {"cue_agreement": "n/a" if agreement is None else agreement,
            "think_answer": think_answer_consistency(rows, classifier, label_set)}


def faithfulness_line(metrics: Mapping[str, Any]) -> Optional[str]:
    """One summary line for a metrics dict holding ``"faithfulness"`` (None when it has none)."""
    f = metrics.get("faithfulness")
    if not f:
        return None
    cue = f["cue_agreement"]
    cue_text = "n/a (no cue field)" if cue == "n/a" else f"{cue['agreement']:.3f} (n={cue['n']})"
    t = f["think_answer"]
    line = (f"faithfulness: cue agreement {cue_text}  reasoning emotion = answer {t['answer_consistency']:.3f}  "
            f"= label {t['label_consistency']:.3f}")
    if "early_answering" in f:
        line += "\n" + early_answering_line(f["early_answering"])
    return line + "  (r1omni_fast.eval.faithfulness)"


def early_answering_line(early: Mapping[str, Any]) -> str:
    """``early answering (N clips): answer changes with the trace cut to 0 % 0.750  50 % ...``."""
    rates = "  ".join(f"{float(k) * 100:g} % {'n/a' if v is None else f'{v:.3f}'}"
                      for k, v in early["change_rate"].items())
    return f"early answering ({early['clips']} clips with a trace): answer changes with the trace cut to {rates}"


def attribution_line(attribution: Mapping[str, Any]) -> str:
    def rate(x: Optional[float]) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    return (f"counterfactual attribution over {attribution['clips']} clips: removing a cited modality changes the "
            f"answer {rate(attribution['cited_change_rate'])} of the time ({attribution['cited']} cited), an uncited "
            f"one {rate(attribution['uncited_change_rate'])} ({attribution['uncited']}); unfaithful claims "
            f"{rate(attribution['unfaithful_claims'])}")


__all__: List[str] = ["EARLY_ANSWERING_CUTS", "attribution_line", "check_cuts", "counterfactual_attribution",
                      "cue_agreement", "cut_key", "cut_trace", "early_answering", "early_answering_line",
                      "faithfulness", "faithfulness_line", "think_answer_consistency"]
