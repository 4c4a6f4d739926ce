"""Modality dropout for GRPO: a prompt is given without a modality with that modality's
probability (``GRPOConfig.modality_dropout``, e.g. ``{"audio": 0.3}``), R1-Omni's open question
of audio use turned into a training knob.

One draw per prompt, shared by its G completions: for each modality its prompt asks for
(``<video>`` / ``<audio>``), in the order video, audio, ``u ~ U[0, 1)`` from a generator seeded by
``(seed, step, crc32(sample id))``; the modality is dropped when ``u < p``. The draws depend only on
those three, so a resumed run draws as the uninterrupted one did. A draw that would leave a prompt
without any medium drops nothing for it (the model always sees something). Dropping removes the
placeholder from the prompt (every backend's processor gives a row exactly the media its prompt
names); the sample's ``extra["dropped_modalities"]`` lists what was dropped, so it is written to
``completions.jsonl`` and reaches reward functions as the ``dropped_modalities`` column.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from r1omni_fast.data import Batch
from r1omni_fast.prompts import MODALITIES

_PLACEHOLDER = {m: re.compile(rf"<{m}>\n?") for m in MODALITIES}


def draw(sample_id: str, asked: Tuple[str, ...], probabilities: Mapping[str, float], seed: int,
         step: int) -> Tuple[str, ...]:
    """The modalities dropped from one prompt (module docstring): a subset of ``asked``, never all
    of it."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(step), zlib.crc32(sample_id.encode("utf-8"))])
    dropped = tuple(m for m in asked if rng.random() < float(probabilities.get(m, 0.0)))
    return () if len(dropped) == len(asked) else dropped


def drop_modalities(batch: Batch, probabilities: Mapping[str, float], seed: int, step: int) -> Batch:
    """``batch`` with each sample's dropped modalities removed from its prompt and listed in its
    ``extra["dropped_modalities"]`` (an empty list when none was). The media tensors are left as
    they are: the processors read only the modalities a prompt names."""
    samples = []
    for s in batch.samples:
        asked = tuple(m for m in MODALITIES if f"<{m}>" in s.prompt)
        dropped = draw(s.id, asked, probabilities, seed, step)
        prompt = s.prompt
        for m in dropped:
            prompt = _PLACEHOLDER[m].sub("", prompt)
        samples.append(dataclasses.replace(s, prompt=prompt, extra={**s.extra, "dropped_modalities": list(dropped)}))
    return dataclasses.replace(batch, samples=samples)


def dropout_metrics(samples: Sequence[Any], dist: Any = None) -> Dict[str, float]:
    """``modality_dropout/<m>``: the share of the step's prompts (``samples``, this rank's; summed
    over the ranks of ``dist`` when it is enabled) given without ``m``."""
    counts = [float(len(samples))] + [float(sum(m in s.extra.get("dropped_modalities", ()) for s in samples))
                                      for m in MODALITIES]
    if dist is not None and dist.enabled:
        counts = [float(c) for c in dist.sum(counts)]
    return {f"modality_dropout/{m}": c / max(counts[0], 1.0) for m, c in zip(MODALITIES, counts[1:])}
