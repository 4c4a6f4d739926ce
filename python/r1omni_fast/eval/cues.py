"""Which senses a reasoning trace talks about: a small keyword lexicon.

R1-Omni argues that its reasoning traces show how visual and audio information contribute to
the answer. This module measures the simplest version of that claim: the share of traces that
*mention* a visual cue, an auditory cue, both or neither. A mention is not evidence that the
model *used* the modality — the modality ablation (``r1omni_fast.eval.runner.ablate``) measures
that — but the two side by side show whether the traces are faithful to the inputs.

Matching: the trace is lower-cased and split into words (``[a-z]+``); a trace mentions a sense
when any of its words is in that sense's lexicon. The lexicons list word forms explicitly (no
stemming), and leave out words that describe both senses ("bright", "sharp", "flat", "high",
"low", "tense", "trembling", "laugh", "cry") so that each hit names one sense unambiguously. The
word lists are those of ``r1omni_fast.grounding`` (which the grounding reward and the
faithfulness metrics also read, with negated sentences left out).
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, Optional

from r1omni_fast.grounding import AUDITORY_WORDS, VISUAL_WORDS

SENSES = ("visual", "auditory")
_WORD = re.compile(r"[a-z]+")


def senses_mentioned(trace: Optional[str]) -> frozenset:
    """The subset of ``{"visual", "auditory"}`` whose lexicon shares a word with ``trace``
    (empty for None or an empty trace)."""
    if not trace:
        return frozenset()
    words = set(_WORD.findall(trace.lower()))
    found = set()
    if words & VISUAL_WORDS:
        found.add("visual")
    if words & AUDITORY_WORDS:
        found.add("auditory")
    return frozenset(found)


def cue_mentions(traces: Iterable[Optional[str]]) -> Dict[str, float]:
    """Shares of traces mentioning each sense.

    Returns ``{"visual", "auditory", "both", "neither"}`` as fractions of the ``"traces"``
    counted (None entries — completions without a ``<think>`` block — count as neither), plus
    ``"traces"`` itself. ``visual`` and ``auditory`` overlap by ``both``; ``visual + auditory -
    both + neither = 1``. All shares are 0.0 when there are no traces.
    """
    counts = {"visual": 0, "auditory": 0, "both": 0, "neither": 0}
    n = 0
    for trace in traces:
        n += 1
        found = senses_mentioned(trace)
        for sense in found:
            counts[sense] += 1
        if len(found) == 2:
            counts["both"] += 1
        elif not found:
            counts["neither"] += 1
    out: Dict[str, float] = {k: (v / n if n else 0.0) for k, v in counts.items()}
    out["traces"] = n
    return out
