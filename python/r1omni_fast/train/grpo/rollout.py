"""One micro-batch of prompts and what it generated: the :class:`Rollout`, the masks and
lengths it needs, the sampler's settings and the generation schedule (TRL's)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from r1omni_fast.config import ConfigError, GRPOConfig
from r1omni_fast.data import Batch
from r1omni_fast.model import AUDIO_TOKEN_INDEX, VIDEO_TOKEN_INDEX

log = logging.getLogger(__name__)


@dataclass
class Rollout:
    """One generated micro-batch: everything its loss needs, trained ``num_iterations`` times.

    Rows are ``b * G + g`` (prompt b, sample g). ``rewards`` (N, R) holds one column per reward
    function (``reward_names``) and ``total`` their weighted sum, both float64 on the CPU as scored;
    ``advantages`` (N,) and ``group_std`` (B,) come from the float32 rewards."""

    batch: Batch
    prompts: Dict[str, torch.Tensor]
    completion_ids: torch.Tensor
    mask: torch.Tensor
    texts: List[str]
    rewards: torch.Tensor
    total: torch.Tensor
    advantages: torch.Tensor
    group_std: torch.Tensor
    old_logp: Optional[torch.Tensor] = None
    ref_logp: Optional[torch.Tensor] = None
    times: Dict[str, float] = field(default_factory=dict)
    ghost: bool = False  # a stand-in of a rank without prompts in this global batch: weight 0
    weight: float = 1.0  # this rank's share of the global micro-batch loss (see normalise_step)
    num_items: Optional[float] = None  # dapo, cispo, vespo: completion tokens of the generation batch, all ranks
    num_invalid: int = 0  # reward values set aside as invalid (on_invalid_reward: skip)
    loss_mask: Optional[torch.Tensor] = None  # mask_truncated_completions: ``mask`` less the truncated rows

    @property
    def loss_tokens(self) -> torch.Tensor:
        """(N, T) bool: the tokens the loss covers (``mask`` holds every generated token, which the
        forward passes and the length metrics see)."""
        return self.mask if self.loss_mask is None else self.loss_mask


def completion_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(N, width) bool: ``t < lengths[n]`` (each completion's tokens, its EOS included)."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def prompt_text_length(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       media_token_ids: Sequence[int] = (VIDEO_TOKEN_INDEX, AUDIO_TOKEN_INDEX)) -> torch.Tensor:
    """Prompt tokens per row with each media placeholder run counted as one token (the length
    R1-Omni's ``max_prompt_length`` bounds); ``media_token_ids``: the processor's placeholder ids."""
    media = torch.isin(input_ids, torch.tensor(list(media_token_ids), device=input_ids.device))
    runs = media & ~torch.nn.functional.pad(media, (1, 0))[:, :-1]
    return ((attention_mask.bool() & ~media).sum(1) + runs.sum(1))


def sampling_settings(cfg: GRPOConfig) -> Dict[str, Any]:
    """The sampler's settings: ``temperature``, ``top_p``, ``top_k`` (0 = off), ``min_p``,
    ``repetition_penalty`` from the fields of those names, overridden by ``generation_kwargs`` (as
    TRL does; the loss keeps ``cfg.temperature``)."""
    settings = {"temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k, "min_p": cfg.min_p,
                "repetition_penalty": cfg.repetition_penalty}
    settings.update(cfg.generation_kwargs or {})
    settings["top_k"] = settings["top_k"] or 0
    return settings


def micro_batch_plan(step: int, gradient_accumulation_steps: int, steps_per_generation: int,
                     num_iterations: int) -> List[tuple]:
    """For each micro-batch of optimizer step ``step`` (from 1): ``(generate, index)``, as TRL's
    ``_prepare_inputs`` counts micro-batches ``k`` over the run: a new generation batch of
    ``steps_per_generation`` micro-batches is made when ``k`` is a multiple of
    ``steps_per_generation * num_iterations``, and micro-batch ``k`` trains on its entry
    ``k % steps_per_generation``."""
    plan = []
    for i in range(gradient_accumulation_steps):
        k = (step - 1) * gradient_accumulation_steps + i
        plan.append((k % (steps_per_generation * num_iterations) == 0, k % steps_per_generation))
    return plan


def resolve_steps_per_generation(cfg: GRPOConfig, world_size: int) -> int:
    """TRL's ``steps_per_generation`` (micro-batches per generation batch): the field, else
    ``generation_batch_size`` (completions over every rank) divided by the completions of one
    global micro-batch (``per_device_train_batch_size`` prompts x ``num_generations`` x ranks),
    else ``gradient_accumulation_steps``. Raises ConfigError when the division is not exact."""
    if cfg.steps_per_generation is not None:
        return int(cfg.steps_per_generation)
    if cfg.generation_batch_size is None:
        return int(cfg.gradient_accumulation_steps)
    per_micro = cfg.per_device_train_batch_size * cfg.num_generations * world_size
    if cfg.generation_batch_size % per_micro:
        raise ConfigError(f"generation_batch_size ({cfg.generation_batch_size} completions) must be a multiple of "
                          f"per_device_train_batch_size x num_generations x ranks = {per_micro}")
    return cfg.generation_batch_size // per_micro
