"""Reward plumbing of GRPO: the ``reward_funcs`` names resolved to scorers, the columns TRL
passes to reward functions, and the check of every reward column."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from r1omni_fast.config import ConfigError, GRPOConfig
from r1omni_fast.rewards import weighted_total
from r1omni_fast.train import faults

log = logging.getLogger(__name__)


RewardSpec = Union[str, Callable[..., Sequence[Optional[float]]]]


def resolve_reward_funcs(names: Sequence[str]) -> List[RewardSpec]:
    """Built-in names ("accuracy", "format") stay names; a name of ``rewards.REWARD_FUNCS``
    ("cue_grounding", "think_emotion") is that function; anything else is a dotted import path
    (``package.module.function`` or ``package.module:function``) to a TRL-style callable
    ``fn(completions, **columns) -> list[float | None]``."""
    from r1omni_fast.rewards import REWARD_FUNCS

    out: List[RewardSpec] = []
    for name in names:
        if name in ("accuracy", "format"):
            out.append(name)
            continue
        if name in REWARD_FUNCS:
            out.append(REWARD_FUNCS[name])
            continue
        module_name, sep, attr = name.partition(":") if ":" in name else name.rpartition(".")
        if not sep or not module_name or not attr:
            raise ConfigError(f"reward_funcs: {name!r} is neither accuracy, format, {', '.join(sorted(REWARD_FUNCS))} "
                              "nor a dotted path like my_pkg.rewards.my_reward")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"reward_funcs: cannot import {name!r}: {exc}") from None
        if not callable(fn):
            raise ConfigError(f"reward_funcs: {name!r} is not callable")
        out.append(fn)
    return out


def check_cue_fields(samples: Sequence[Any], reward_names: Sequence[str], where: str) -> None:
    """Before any step: with ``cue_grounding`` among ``reward_names``, every sample's ``cue`` field
    must name modalities (``r1omni_fast.grounding.parse_cue``; a missing one is "not scored"), else
    ConfigError naming the record and the file setting ``where``."""
    if "cue_grounding" not in reward_names:
        return
    from r1omni_fast.grounding import parse_cue

    for s in samples:
        try:
            parse_cue(s.extra.get("cue"), where=f"{s.source} (record {s.id}), its cue field")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc} (the cue_grounding reward reads it)") from None


def reward_name(spec: RewardSpec) -> str:
    return spec if isinstance(spec, str) else getattr(spec, "__name__", type(spec).__name__)


@dataclass
class RewardTrainerState:
    """What TRL passes to reward functions as ``trainer_state`` (the fields of transformers'
    ``TrainerState`` that a reward schedule reads): optimizer steps done, the last step, the
    epoch."""

    global_step: int
    max_steps: int
    epoch: int


def reward_inputs(samples: Sequence[Any], texts: Sequence[str], style: str) -> tuple:
    """``(completions, columns)`` for :func:`score_batch`, one entry per completion, as TRL's
    GRPOTrainer passes them to reward functions: ``prompts`` and ``completions`` as chat messages
    (``style="messages"``: ``[{"role": "user", "content": prompt}]`` and ``[{"role": "assistant",
    "content": text}]``, R1-Omni's data being conversational) or as strings (``"text"``); every
    column of the data record: ``solution``, ``label``, ``id``, ``video``, ``audio`` (str paths,
    None when the audio is the video's own track) and every other key of the record (None where a
    record lacks it)."""
    if style == "messages":
        completions: List[Any] = [[{"role": "assistant", "content": t}] for t in texts]
        prompts: List[Any] = [[{"role": "user", "content": s.prompt}] for s in samples]
    else:
        completions, prompts = list(texts), [s.prompt for s in samples]
    columns: Dict[str, List[Any]] = {
        "prompts": prompts, "solution": [s.solution for s in samples], "label": [s.label for s in samples],
        "id": [s.id for s in samples], "video": [str(s.video) for s in samples],
        "audio": [None if s.audio is None else str(s.audio) for s in samples]}
    reserved = set(columns) | {"completions", "completion_ids", "trainer_state"}
    extra_keys = [k for s in samples for k in s.extra if k not in reserved]
    for key in dict.fromkeys(extra_keys):
        columns[key] = [s.extra.get(key) for s in samples]
    return completions, columns


def check_rewards(scores: Dict[str, np.ndarray], samples: Sequence[Any], names: Sequence[str],
                  weights: Sequence[float], cfg: GRPOConfig) -> int:
    """Validate every reward column in place: NaN is "not scored" (it counts 0 in the total);
    +-inf or ``|value| > reward_bound`` raise a :class:`faults.TrainingError` naming the function
    and the sample, or with ``on_invalid_reward: skip`` become NaN too and are counted (the
    total is recomputed). Returns the number of values set aside."""
    G = cfg.num_generations
    set_aside = 0
    for name in names:
        col = scores[name]
        bad = np.isinf(col) | (np.abs(np.nan_to_num(col, nan=0.0, posinf=0.0, neginf=0.0)) > cfg.reward_bound)
        if not bad.any():
            continue
        i = int(np.flatnonzero(bad)[0])
        if cfg.on_invalid_reward == "raise":
            raise faults.TrainingError(
                f"reward function {name!r} returned {float(col[i])!r} for sample {samples[i].id} ({samples[i].source}), "
                f"completion {i % G + 1} of {G}: a reward must be finite and within +-reward_bound "
                f"({cfg.reward_bound:g}); return None or NaN for 'not scored', or set on_invalid_reward: skip "
                "to count such values and leave them out")
        log.warning("reward function %r returned %d invalid value(s) (first %r for sample %s); left out",
                    name, int(bad.sum()), float(col[i]), samples[i].id)
        col[bad] = np.nan
        set_aside += int(bad.sum())
    if set_aside:
        scores["total"] = weighted_total([scores[n] for n in names], weights)
    return set_aside
