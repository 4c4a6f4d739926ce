"""R1-Omni's published GRPO recipe, selectable per run (docs/reproducing.md).

The GRPO trainer rewrites its samples once, when it reads them:

``prompt_style``
    "data" keeps the record's human turn verbatim. "r1omni" replaces it with R1-Omni's GRPO user
    turn: the record's media placeholders (video, then audio, one line each), the fixed
    ``question`` (None = R1-Omni's), a newline and the format instruction
    (:func:`r1omni_fast.prompts.r1omni_grpo_instruction`). The BERT gate reads that text
    without the placeholders, as in R1-Omni.
``solution_style``
    "label" keeps ``"<answer> {canonical label} </answer>"``; "raw" uses the gpt value verbatim,
    ``"<answer> {gpt} </answer>"``, as R1-Omni builds it (so R1-Omni's case-sensitive accuracy
    reward, ``reward_mode: r1omni``, compares against the data's own spelling).

Both apply to the training and the evaluation split (in-training evaluation asks what training
asks). :func:`warn_missing_format` logs a warning when the format reward is on and a prompt does
not ask for the ``<think>``/``<answer>`` format.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Sequence

from r1omni_fast.config import AnyConfig
from r1omni_fast.data.reader import DataFile, Sample
from r1omni_fast.prompts import MODALITIES, R1_OMNI_QUESTION, asks_for_format, r1omni_grpo_instruction

log = logging.getLogger(__name__)


def raw_solution(sample: Sample) -> str:
    """R1-Omni's solution: ``f"<answer> {gpt} </answer>"`` with the gpt value verbatim."""
    return f"<answer> {sample.target} </answer>"


def grpo_sample(sample: Sample, *, prompt_style: str = "data", question: Optional[str] = None,
                solution_style: str = "label") -> Sample:
    """``sample`` with its prompt and solution in the given styles (a new Sample; ``label`` and
    everything else unchanged). Raises ValueError for an unknown style."""
    if prompt_style not in ("data", "r1omni"):
        raise ValueError(f"prompt_style={prompt_style!r}: use data or r1omni")
    if solution_style not in ("label", "raw"):
        raise ValueError(f"solution_style={solution_style!r}: use label or raw")
    changes = {}
    if prompt_style == "r1omni":
        kept = [m for m in MODALITIES if f"<{m}>" in sample.prompt]
        changes["prompt"] = r1omni_grpo_instruction(question or R1_OMNI_QUESTION, modalities=kept)
    if solution_style == "raw":
        changes["solution"] = raw_solution(sample)
    return dataclasses.replace(sample, **changes) if changes else sample


def apply_grpo_recipe(data: DataFile, cfg: AnyConfig) -> DataFile:
    """``data`` with every sample rewritten by :func:`grpo_sample` from the config's
    ``prompt_style``, ``question`` and ``solution_style``."""
    samples = [grpo_sample(s, prompt_style=cfg.prompt_style, question=cfg.question,
                           solution_style=cfg.solution_style) for s in data.samples]
    return dataclasses.replace(data, samples=samples)


def warn_missing_format(samples: Sequence[Sample], reward_names: Sequence[str], where: str) -> int:
    """Log a warning when ``"format"`` is among ``reward_names`` and prompts of ``samples`` do not
    name both ``<think>`` and ``<answer>``: the format reward then asks for a format the model is
    never told. Returns the number of such prompts."""
    if "format" not in reward_names:
        return 0
    missing = [s for s in samples if not asks_for_format(s.prompt)]
    if missing:
        log.warning("%s: %d of %d prompt(s) do not ask for the <think> </think> <answer> </answer> format "
                    "that the format reward checks (first: %s, %r); add the instruction to the data or set "
                    "prompt_style: r1omni", where, len(missing), len(samples), missing[0].source,
                    missing[0].prompt)
    return len(missing)
