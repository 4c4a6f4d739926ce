"""GRPO with verifiable rewards (R1-Omni stage 2; math in DESIGN.md §4).

One optimizer step, top to bottom (:meth:`GRPOTrainer.train_step`):

1. rollout of a generation batch of ``steps_per_generation`` micro-batches (default
   ``gradient_accumulation_steps``; TRL's schedule, :func:`micro_batch_plan`: each micro-batch is
   trained ``num_iterations`` times), per micro-batch of ``per_device_train_batch_size`` PROMPTS:
   generate G completions per prompt with a shared prompt prefix (``model.generate``); decode;
   score every reward function in one batch call (``rewards.score_batch``: the built-ins in one
   native pass, user callables with TRL's signature); rewards beyond ``reward_bound`` or infinite
   are an error or, by choice, left out (:meth:`GRPOTrainer.check_rewards`); ``group_advantages``;
   reference log-probs (``selective_logprobs`` under no_grad; skipped, and no reference built,
   when beta = 0); old log-probs computed once when ``num_iterations > 1`` or
   ``steps_per_generation > gradient_accumulation_steps``; the generation batch normalised as one
   (:func:`normalise_step`);
2. per micro-batch: policy forward over the completion positions only (the prompt and its media
   are embedded once per prompt and shared by its G rows); ``grpo_loss`` (Triton on CUDA, PyTorch
   reference on CPU; :func:`micro_batch_loss`); backward, divided by the accumulation count
   (:func:`accumulation_divisor`);
3. clip, optimizer and scheduler step (skipped when the loss or the gradient norm is not finite:
   ``r1omni_fast.train.faults.NonFiniteGuard``).

The reference model shares the policy's frozen modules (towers, BERT) and holds its own copy of
the trainable parts only; with ``use_peft`` it is the policy itself with its LoRA adapters
disabled (``r1omni_fast.model.lora.AdapterDisabled``): no copy at all. Checkpoints and resume follow the SFT stage and add the sampler's
generator state; a checkpoint is written at the end of a step that spends its generation batch
(with ``num_iterations > 1`` or ``steps_per_generation`` the buffered completions are never
stored).

Launch: ``r1omni-fast train --config configs/tiny-grpo.yaml``. Outputs: ``OUT/checkpoint-N/``,
``OUT/metrics.jsonl`` (TRL's metric names), ``OUT/completions.jsonl`` (prompt id, label,
completion, each reward, advantage), ``OUT/grpo_curves.png`` and the final model in ``OUT``.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

from r1omni_fast import labels as label_sets
from r1omni_fast.config import ConfigError, GRPOConfig
from r1omni_fast.data import Batch
from r1omni_fast.kernels import grpo_loss, group_advantages, selective_logprobs, token_entropy
from r1omni_fast.kernels.objective import CLIPPED_LOSS_TYPES, TOKEN_COUNT_LOSS_TYPES, LossSpec
from r1omni_fast.model import AUDIO_TOKEN_INDEX, VIDEO_TOKEN_INDEX, GenerationOutput, lora
from r1omni_fast.rewards import score_batch, weighted_total
from r1omni_fast.train import common, distributed, faults, modality_dropout, recipe
from r1omni_fast.train.checkpoint import read_trainer_state
from r1omni_fast.train.metrics_log import MetricsLog, plot_curves, read_jsonl
from r1omni_fast.train.schedule import build_scheduler
from r1omni_fast.train.tracking import Trackers, markdown_table

log = logging.getLogger(__name__)

RewardSpec = Union[str, Callable[..., Sequence[Optional[float]]]]


# ------------------------------------------------------------------------------ pieces


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


def reward_name(spec: RewardSpec) -> str:
    return spec if isinstance(spec, str) else getattr(spec, "__name__", type(spec).__name__)


def completion_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(N, width) bool: ``t < lengths[n]`` (each completion's tokens, its EOS included)."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def reference_parts(ref: Any, policy: Any) -> Dict[str, torch.nn.Module]:
    """The reference's own (not shared) modules."""
    return {n: m for n, m in ref.named_children() if m is not policy._modules[n]}


def prompt_text_length(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       media_token_ids: Sequence[int] = (VIDEO_TOKEN_INDEX, AUDIO_TOKEN_INDEX)) -> torch.Tensor:
    """Prompt tokens per row with each media placeholder run counted as one token (the length
    R1-Omni's ``max_prompt_length`` bounds); ``media_token_ids``: the processor's placeholder ids."""
    media = torch.isin(input_ids, torch.tensor(list(media_token_ids), device=input_ids.device))
    runs = media & ~torch.nn.functional.pad(media, (1, 0))[:, :-1]
    return ((attention_mask.bool() & ~media).sum(1) + runs.sum(1))


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


def step_advantages(rewards: torch.Tensor, group_size: int, weights: Sequence[float], scale: str,
                    device: torch.device) -> tuple:
    """``group_advantages`` of a (N, R) float64 reward table (one column per function, NaN = not
    scored), as TRL: a completion that every function left unscored (all NaN) is left out of its
    group's mean and std (and of the batch std) and gets advantage 0. Returns (advantages (N,)
    float32, group mean (N // G,), group std (N // G,)) on ``device``."""
    w = torch.tensor(list(weights), dtype=torch.float32, device=device)
    unscorable = torch.isnan(rewards).all(1)
    if not bool(unscorable.any()):
        return group_advantages(rewards.to(device, torch.float32), group_size, weights=w, scale=scale)
    total = torch.nansum(rewards * torch.tensor(list(weights), dtype=torch.float64), dim=1)
    total[unscorable] = float("nan")
    grouped = total.view(-1, group_size)
    mean = torch.nanmean(grouped, dim=1)
    count = (~torch.isnan(grouped)).sum(1)
    dev = grouped - mean[:, None]
    std = torch.sqrt(torch.nansum(dev * dev, dim=1) / (count - 1).clamp(min=1))
    std = torch.where(count > 1, std, torch.zeros_like(std))
    if scale == "group":
        adv = dev / (std[:, None] + 1e-4)
    elif scale == "batch":
        valid = total[~unscorable]
        adv = dev / ((valid.std() if valid.numel() > 1 else torch.tensor(0.0, dtype=torch.float64)) + 1e-4)
    else:
        adv = dev
    adv = torch.nan_to_num(adv.reshape(-1), nan=0.0)
    return (adv.to(device, torch.float32), torch.nan_to_num(mean).to(device, torch.float32),
            std.to(device, torch.float32))


def sampling_settings(cfg: GRPOConfig) -> Dict[str, Any]:
    """The sampler's settings: ``temperature``, ``top_p``, ``top_k`` (0 = off), ``min_p``,
    ``repetition_penalty`` from the fields of those names, overridden by ``generation_kwargs`` (as
    TRL does; the loss keeps ``cfg.temperature``)."""
    settings = {"temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k, "min_p": cfg.min_p,
                "repetition_penalty": cfg.repetition_penalty}
    settings.update(cfg.generation_kwargs or {})
    settings["top_k"] = settings["top_k"] or 0
    return settings


def sequence_clip_extremes(logp: torch.Tensor, old_logp: Optional[torch.Tensor], advantages: torch.Tensor,
                           mask: torch.Tensor, eps_low: float, eps_high: float, level: str) -> tuple:
    """TRL's ``clip_ratio/low_min`` and ``clip_ratio/high_max`` of one micro-batch on one rank:
    with the importance ratio ``r`` of the loss (token, or the sequence's masked mean log-ratio),
    low = ``r < 1 - eps_low and A < 0``, high = ``r > 1 + eps_high and A > 0``; each row's masked
    mean of the flags (token level; NaN for a row without loss tokens) or its flag (sequence level);
    returns (min over rows of low, max over rows of high) as floats, NaN when no row counts.
    ``logp``, ``old_logp``, ``mask`` (N, T); ``advantages`` (N,); ``old_logp`` None = on-policy."""
    active = mask.bool()
    m = active.to(logp.dtype)
    log_ratio = (torch.zeros_like(logp) if old_logp is None
                 else torch.where(active, logp - old_logp.to(logp.dtype), torch.zeros_like(logp)))
    if level == "sequence":
        log_ratio = (log_ratio * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0)
    ratio = torch.exp(log_ratio)
    adv = advantages.reshape(-1, 1).to(logp.dtype)
    low = ((ratio < 1.0 - eps_low) & (adv < 0)).to(logp.dtype)
    high = ((ratio > 1.0 + eps_high) & (adv > 0)).to(logp.dtype)
    if level == "sequence":
        low_rows, high_rows = low[:, 0], high[:, 0]
    else:
        count = m.sum(-1)
        low_rows, high_rows = (low * m).sum(-1) / count, (high * m).sum(-1) / count  # 0/0 = NaN: no tokens
    return (_nan_reduce(low_rows.double().tolist(), min), _nan_reduce(high_rows.double().tolist(), max))


def sequence_level_warning(loss_type: str) -> str:
    """What TRL warns when sequence-level importance sampling meets a loss that sums tokens."""
    return (f"importance_sampling_level: sequence with loss_type: {loss_type}: the loss sums per-token terms, so "
            "each sequence weighs by its completion length instead of the per-sequence objective of GSPO; "
            "set loss_type: grpo to reproduce the GSPO paper's setup")


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


def loss_warnings(cfg: GRPOConfig) -> List[str]:
    """The warnings TRL's GRPOTrainer gives for this loss set-up (logged once, by rank 0)."""
    out = []
    if cfg.importance_sampling_level == "sequence" and cfg.loss_type in ("bnpo", "dr_grpo", "dapo", "cispo"):
        out.append(sequence_level_warning(cfg.loss_type))
    if cfg.loss_type == "vespo" and cfg.importance_sampling_level != "token":
        out.append("loss_type: vespo computes sequence-level importance weights itself: set "
                   "importance_sampling_level: token (the default)")
    return out


def off_policy_mask(logp: Optional[torch.Tensor], old_logp: Optional[torch.Tensor], advantages: torch.Tensor,
                    mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """TRL's ``get_off_policy_mask`` (DeepSeek-V3.2's off-policy sequence mask): (N, 1) bool, True =
    keep: ``A >= 0`` or the sequence's masked mean of ``old_logp - logp`` (the sampling policy's
    log-probs minus the current ones, no gradient) ``<= threshold``. On-policy (``old_logp`` None)
    the mean is 0. ``logp``, ``old_logp``, ``mask`` (N, T); ``advantages`` (N,)."""
    if old_logp is None:
        mean_kl = torch.zeros((mask.shape[0], 1), device=mask.device)
    else:
        m = mask.to(logp.dtype)
        kl = (old_logp.to(logp.dtype) - logp.detach()) * m
        mean_kl = kl.sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0)
    return (advantages.reshape(-1, 1) >= 0) | (mean_kl <= threshold)


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, quantile: float, dist: distributed.Dist,
                      contribute: bool = True) -> torch.Tensor:
    """TRL's ``get_high_entropy_mask``: the (N, T) bool mask of the completion tokens whose entropy
    is at least the ``quantile`` quantile (``torch.quantile``, linear interpolation) of the entropies
    of every completion token of this micro-batch on every rank (``contribute=False``: this rank
    adds none, a ghost); all False when no rank has a token. ``entropy`` (N, T) float, ``mask``
    (N, T) bool. A collective: every rank calls it for every micro-batch."""
    active = mask.bool()
    local = entropy.detach()[active].float().cpu() if contribute else torch.zeros(0)
    gathered = torch.cat(dist.gather(local)) if dist.enabled else local
    if gathered.numel() == 0:
        return torch.zeros_like(active)
    threshold = torch.quantile(gathered, quantile)
    return ((entropy.detach() * active) >= threshold.to(entropy.device, entropy.dtype)) & active


#: Consecutive GRPO steps without learning signal (every group's rewards equal) before
#: :func:`no_signal_streak` warns.
NO_SIGNAL_STEPS = 5


def no_signal_streak(streak: int, record: Dict[str, Any], *, steps: int = NO_SIGNAL_STEPS, say: bool = True) -> int:
    """The number of consecutive steps without learning signal up to the step of ``record`` (its
    metrics), given ``streak`` before it. A step has none when every group's completions got the
    same reward (``frac_reward_zero_std`` 1.0: every advantage is 0). When the streak reaches
    ``steps`` a warning naming the likely cause is logged (``say``: on this rank), once per streak."""
    if record.get("frac_reward_zero_std", 0.0) < 1.0:
        return 0
    streak += 1
    if streak == steps and say:
        log.warning("GRPO: no learning signal for %d steps in a row (steps %d-%d): in every group all completions got "
                    "the same reward (frac_reward_zero_std 1.0, mean reward %.3g), so every advantage is 0 and the "
                    "rewards teach nothing. Likely cause: no completion is a well-formed answer (an untrained "
                    "model never writes <answer>...</answer> with a label): start from an SFT model "
                    "(model_name_or_path), or check reward_funcs and label_set", steps, record["step"] - steps + 1,
                    record["step"], record.get("reward", float("nan")))
    return streak


def disable_dropout(model: torch.nn.Module) -> int:
    """TRL's ``disable_dropout``: ``p = 0`` in every ``torch.nn.Dropout`` module of ``model``.
    Returns how many modules it changed."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p != 0:
            module.p = 0.0
            changed += 1
    return changed


def accumulation_divisor(loss_type: str, micro_batches: int) -> int:
    """What each micro-batch's loss is divided by before its backward, as in TRL's GRPOTrainer:
    grpo, bnpo, dr_grpo, sapo and luspo by the accumulation count; dapo, cispo and vespo by
    nothing, since their ``num_items_in_batch`` already counts the tokens of every micro-batch of
    the step."""
    return 1 if loss_type in TOKEN_COUNT_LOSS_TYPES else int(micro_batches)


def normalize_then_sum(rewards: torch.Tensor, group_size: int, weights: Sequence[float]) -> torch.Tensor:
    """TRL's ``multi_objective_aggregation: normalize_then_sum`` (GDPO): each reward function's
    column normalised within each group, ``(r - nanmean_g) / (nanstd_g + 1e-4)`` (Bessel; a group
    where a function scored fewer than 2 completions gives NaN, which the sum skips), weighted and
    summed, then normalised over every completion given: ``(R - nanmean) / (nanstd + 1e-4)``; a
    completion no function scored gets 0. ``rewards`` (N, F) float64, NaN = not scored; returns (N,)
    float64."""
    unscorable = torch.isnan(rewards).all(1)
    grouped = rewards.view(-1, group_size, rewards.shape[1])
    normalised = ((grouped - torch.nanmean(grouped, 1, keepdim=True)) / (_nanstd(grouped, 1) + 1e-4))
    total = torch.nansum(normalised.view(rewards.shape) * torch.tensor(list(weights), dtype=rewards.dtype), 1)
    total[unscorable] = float("nan")
    advantages = (total - torch.nanmean(total)) / (_nanstd(total, 0) + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def _nanstd(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Standard deviation over ``dim`` ignoring NaN, with Bessel's correction (NaN below 2 values),
    keeping the dimension."""
    count = (~torch.isnan(x)).sum(dim, keepdim=True)
    dev = x - torch.nanmean(x, dim, keepdim=True)
    var = torch.nansum(dev * dev, dim, keepdim=True) / (count - 1).clamp(min=1)
    return torch.where(count > 1, var.sqrt(), torch.full_like(var, float("nan")))


def normalise_step(rollouts: Sequence["Rollout"], *, loss_type: str, scale_rewards: str, group_size: int,
                   reward_weights: Sequence[float], dist: distributed.Dist,
                   aggregation: str = "sum_then_normalize") -> None:
    """Set the step-level quantities of a step's rollouts once all of them are generated (every
    micro-batch of every rank, ghosts included so that the collectives match):

    - ``weight``: each rank's share of a global micro-batch's loss, so that the ranks' losses,
      averaged by DDP / FSDP, equal one process on the whole global micro-batch: grpo, dr_grpo,
      sapo and luspo weigh a rank by its share of the sequences; bnpo keeps TRL's per-rank token
      mean and averages the ranks that hold prompts; dapo, cispo, vespo ``world_size``; ghosts 0;
      one process 1;
    - ``num_items`` (dapo, cispo, vespo): the completion tokens of the whole generation batch,
      every micro-batch and every rank (TRL's ``num_items_in_batch``; the kernel divides by it,
      DDP's average divides by the rank count, so ``sum l*m / num_items`` over the batch: one
      token mean per optimizer step when the generation batch is the step, the default);
    - ``advantages`` with ``scale_rewards="batch"``: group means, divided by the standard
      deviation of every reward of the generation batch on every rank; with ``aggregation=
      "normalize_then_sum"`` (``scale_rewards`` then has no effect, as in TRL):
      :func:`normalize_then_sum` of the generation batch on every rank.

    Inputs: ``rollouts``: this rank's micro-batches of one generation batch, in order; ``dist``
    the job's ranks."""
    world = dist.world_size
    live = [r for r in rollouts if not r.ghost]
    counts: List[float] = []
    for r in rollouts:
        counts += [0 if r.ghost else r.mask.shape[0], 0 if r.ghost else int(r.loss_tokens.sum()), 0 if r.ghost else 1]
    totals = dist.sum(counts)
    step_tokens = sum(totals[1::3])
    for i, r in enumerate(rollouts):
        all_rows, active = totals[3 * i], totals[3 * i + 2]
        rows = 0 if r.ghost else r.mask.shape[0]
        if loss_type in ("grpo", "dr_grpo", "sapo", "luspo"):
            r.weight = rows * world / max(all_rows, 1.0)
        elif loss_type == "bnpo":
            r.weight = 0.0 if r.ghost else world / max(active, 1.0)
        elif loss_type in TOKEN_COUNT_LOSS_TYPES:
            r.weight = 0.0 if r.ghost else float(world)
            r.num_items = step_tokens
        else:
            raise ValueError(f"normalise_step: unknown loss_type {loss_type!r}")
    if scale_rewards == "batch" or aggregation == "normalize_then_sum":
        ranks = dist.gather([r.rewards.double().cpu() for r in live])
        everything = torch.cat([t for rank in ranks for t in rank])
        if aggregation == "normalize_then_sum":
            advantages = normalize_then_sum(everything, group_size, reward_weights)
        else:
            advantages, _, _ = step_advantages(everything, group_size, reward_weights, "batch", torch.device("cpu"))
        start = sum(t.shape[0] for rank in ranks[:dist.rank] for t in rank)
        for r in live:
            n = r.rewards.shape[0]
            r.advantages = advantages[start:start + n].to(r.advantages.device, r.advantages.dtype)
            start += n


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


#: The loss metrics a step logs when the loss returns them (TRL's names).
LOSS_METRIC_KEYS = ("kl", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
                    "cispo_clip_ratio", "vespo/phi_seq_mean")
#: Means over loss tokens at either importance-sampling level.
TOKEN_METRICS = ("kl", "entropy")
#: Means over sequences at either level (every row, as TRL's one-value-per-sequence mean).
ROW_METRICS = ("vespo/phi_seq_mean",)


def micro_batch_loss(logits: torch.Tensor, rollout: Any, cfg: GRPOConfig, dist: distributed.Dist, *,
                     entropy: bool = True) -> tuple:
    """``grpo_loss`` of one micro-batch (TRL's ``_compute_loss`` before the accumulation divisor):
    (loss, metrics). ``logits`` (N, T, V) of the policy at the completion positions; ``rollout``
    supplies ``completion_ids``, ``advantages``, ``loss_tokens``, ``old_logp``, ``ref_logp``,
    ``num_items`` and ``ghost`` (see :class:`Rollout`).

    Besides the kernel's metrics: for the clipped loss types ``clip_ratio/low_min``,
    ``clip_ratio/high_max`` of this rank's rows (see :func:`sequence_clip_extremes`) and, when
    ``entropy``, ``entropy``: the mean token entropy of the sampling distribution over the loss
    tokens, from the loss's own pass over the logits. With ``top_entropy_quantile < 1`` the
    entropies come first (a no-grad pass: the mask needs them before the loss) and the policy term
    keeps the tokens of :func:`high_entropy_mask` (a collective over the ranks); with
    ``off_policy_mask_threshold``, the sequences of :func:`off_policy_mask` only (the current
    log-probs in a no-grad pass first); the KL term and the normalisers keep every loss token, as
    TRL."""
    mask = rollout.loss_tokens
    token_h, policy_mask = None, None
    if cfg.top_entropy_quantile < 1.0:
        token_h = token_entropy(logits, cfg.temperature)
        policy_mask = high_entropy_mask(token_h, mask, 1.0 - cfg.top_entropy_quantile, dist,
                                        contribute=not rollout.ghost)
    if cfg.off_policy_mask_threshold is not None:
        current = None if rollout.old_logp is None else selective_logprobs(logits, rollout.completion_ids,
                                                                           cfg.temperature)
        keep = off_policy_mask(current, rollout.old_logp, rollout.advantages, mask, cfg.off_policy_mask_threshold)
        policy_mask = keep.expand(mask.shape) if policy_mask is None else policy_mask & keep
    spec = LossSpec.from_config(cfg)
    loss, metrics = grpo_loss(logits, rollout.completion_ids, rollout.advantages, spec, mask=mask,
                              old_logp=rollout.old_logp, ref_logp=rollout.ref_logp,
                              num_items_in_batch=rollout.num_items, policy_mask=policy_mask,
                              return_entropy=entropy and token_h is None)
    if entropy:
        tokens = mask.to(torch.float32)
        h = token_h if token_h is not None else metrics["entropy"]
        metrics["entropy"] = (h * tokens).sum() / tokens.sum().clamp(min=1.0)
    if cfg.loss_type in CLIPPED_LOSS_TYPES:
        metrics["clip_ratio/low_min"], metrics["clip_ratio/high_max"] = sequence_clip_extremes(
            metrics["logp"], rollout.old_logp, rollout.advantages, mask, spec.eps_low, spec.eps_high,
            cfg.importance_sampling_level)
    return loss, metrics


# ------------------------------------------------------------------------------ trainer


class GRPOTrainer:
    """The GRPO loop for one config. ``run_grpo(cfg)`` is ``GRPOTrainer(cfg).train()``."""

    def __init__(self, cfg: GRPOConfig, *, loader: Optional[Callable] = None, progress: bool = True) -> None:
        if cfg.stage != "grpo":
            raise ConfigError(f"GRPOTrainer needs a grpo config, got stage {cfg.stage!r}")
        cfg.require("model_name_or_path", "data_file")
        self.cfg = cfg
        self.progress = progress
        self.no_signal_steps = 0  # consecutive steps without learning signal (no_signal_streak)
        self.dist = distributed.from_environment(cfg)
        self.steps_per_generation = resolve_steps_per_generation(cfg, self.dist.world_size)
        self.lock = common.claim_output_dir(cfg, self.dist)  # released when train() ends
        try:
            self._setup(cfg, loader)
        except BaseException:
            self.lock.release()
            raise

    def _setup(self, cfg: GRPOConfig, loader: Optional[Callable]) -> None:
        self.resume_from = common.find_resume(cfg)
        # a run resumed from a per-prompt-sampling checkpoint keeps sampling that way
        resumed_per_prompt = bool(self.resume_from is not None
                                  and read_trainer_state(self.resume_from).get("per_prompt_sampling", False))
        self.per_prompt = (cfg.per_prompt_sampling if cfg.per_prompt_sampling is not None
                           else self.dist.enabled or resumed_per_prompt)
        if self.dist.enabled and not self.per_prompt:
            raise ConfigError("per_prompt_sampling: false needs a single process (with several ranks each "
                              "prompt samples from its own generator so that runs do not depend on the rank count)")
        if self.dist.is_main:
            for warning in loss_warnings(cfg):
                log.warning(warning)
        common.seed_everything(cfg.seed)
        self.device = self.dist.device
        self.out = Path(cfg.output_dir)
        self.reward_funcs = resolve_reward_funcs(cfg.reward_funcs)
        self.reward_names = [reward_name(f) for f in self.reward_funcs]
        if len(set(self.reward_names)) != len(self.reward_names):
            raise ConfigError(f"reward_funcs: names must be distinct, got {self.reward_names}")
        self.reward_weights = cfg.reward_weights or [1.0] * len(self.reward_funcs)
        self.label_set = label_sets.resolve(cfg.label_set)
        self.train_data = common.read_split(cfg, "data_file", kind="auto")
        self.eval_data = common.read_split(cfg, "eval_file", kind="auto") if cfg.eval_file else None
        self.train_data = recipe.apply_grpo_recipe(self.train_data, cfg)
        recipe.warn_missing_format(self.train_data.samples, self.reward_names, "data_file")
        if self.eval_data is not None:
            self.eval_data = recipe.apply_grpo_recipe(self.eval_data, cfg)

        self.model = common.load_policy(self.resume_from or cfg.model_name_or_path, cfg, self.device)
        self.model.train()
        self.ref = None
        if cfg.beta != 0.0 and cfg.use_peft:  # the policy with its adapters disabled: the base weights
            self.ref = lora.AdapterDisabled(self.model)
        elif cfg.beta != 0.0:  # beta = 0: no reference model at all
            source = None
            if self.resume_from is not None:  # the reference is the starting model, not the checkpoint
                source = common.load_policy(cfg.model_name_or_path, cfg, self.device)
            self.ref = self.model.reference_view(source,
                                                 share_frozen=not (self.dist.fsdp and cfg.fsdp_shard_towers))
        if cfg.disable_dropout:
            disable_dropout(self.model)
            if self.ref is not None:
                disable_dropout(self.ref)
        if self.dist.fsdp:
            bf16 = common.uses_bf16(cfg, self.device)
            distributed.fsdp(self.model, self.dist, cfg, use_bf16=bf16)
            if self.ref is not None and not cfg.use_peft:
                distributed.fsdp(self.ref, self.dist, cfg, use_bf16=bf16)
        # the policy pass of a training step runs through this (DDP must see it as a forward; FSDP
        # has wrapped the method with its hooks above)
        self.policy_logits: Callable[..., torch.Tensor] = self.model.completion_logits
        if self.dist.enabled and not self.dist.fsdp:
            self.policy_logits = distributed.ddp(distributed.CompletionLogits(self.model), self.dist, cfg)
        self.params = common.trainable_parameters(self.model)
        self.optimizer = common.build_optimizer(self.model, cfg)
        self.collate = common.make_collator(cfg, self.model, loader)
        batches_per_epoch = -(-len(self.train_data) // (cfg.per_device_train_batch_size * self.dist.world_size))
        self.last_step = common.total_steps(cfg, batches_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, cfg.lr_scheduler_type, cfg.warmup_ratio, self.last_step)
        self.sampler = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.start = common.restore(self.resume_from, self.optimizer, self.scheduler, self.model, self.dist,
                                    cfg=cfg)
        extra = self.start.extra or {}
        if "sampler" in extra:
            self.sampler.set_state(extra["sampler"])
        if self.ref is not None and cfg.sync_ref_model and self.resume_from is not None:
            if "ref_model" in extra:  # written by one process
                self._ref_load(extra["ref_model"])
            else:  # written by several ranks: in the sharded checkpoint
                state = self._ref_state()
                distributed.load_sharded_states(self.resume_from, {"reference": state})
                self._ref_load(state)
        self.stream: Optional[common.BatchStream] = None
        self.rollouts: List[Rollout] = []  # the micro-batches of the last step
        self.buffer: List[Rollout] = []  # the current generation batch (steps_per_generation micro-batches)
        self.global_step = self.start.step
        self.guard = faults.NonFiniteGuard(cfg.max_nonfinite_steps,
                                           int((self.start.state or {}).get("nonfinite_steps", 0)))
        self.trackers: Optional[Trackers] = None  # rank 0, while train() runs
        self.num_tokens = int((self.start.state or {}).get("num_tokens", 0))

    # --- one micro-batch of prompts -> completions, rewards, advantages, log-probs -----------
    def prompt_inputs(self, batch: Batch) -> Dict[str, torch.Tensor]:
        inputs = common.model_batch(self.model.processor, batch, padding_side="left",
                                    chat_template=self.cfg.chat_template)
        if self.cfg.max_prompt_length is not None:
            longest = int(prompt_text_length(inputs["input_ids"], inputs["attention_mask"],
                                             self.model.processor.media_token_ids).max())
            if longest > self.cfg.max_prompt_length:
                raise ConfigError(f"max_prompt_length {self.cfg.max_prompt_length} is shorter than a prompt "
                                  f"({longest} tokens, each media placeholder counted once): raise it")
        return common.to_device(inputs, self.device)

    def prompt_generators(self, positions: Sequence[int]) -> List[torch.Generator]:
        """One generator per prompt, seeded by (seed, the prompt's place in the sample stream)."""
        seeds = [int(np.random.SeedSequence([self.cfg.seed, max(p, 0)]).generate_state(1, np.uint64)[0] >> 1)
                 for p in positions]
        return [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    def generate(self, prompts: Dict[str, torch.Tensor], positions: Optional[Sequence[int]] = None) -> GenerationOutput:
        cfg = self.cfg
        generator: Any = self.sampler
        if self.per_prompt:
            if positions is None:
                raise ValueError("per-prompt sampling needs the prompts' stream positions")
            generator = self.prompt_generators(positions)
        self.model.eval()
        try:
            with common.autocast(cfg, self.device), distributed.gathered(self.model, self.dist):
                return self.model.generate(prompts, num_generations=cfg.num_generations,
                                           max_new_tokens=cfg.max_completion_length, do_sample=True,
                                           generator=generator, **sampling_settings(cfg))
        finally:
            self.model.train()

    def sequence_logprobs(self, model: Any, rollout: Rollout) -> torch.Tensor:
        """Per-token log-probs (N, T) of the rollout's completions under ``model``, no gradient."""
        with torch.no_grad(), common.autocast(self.cfg, self.device):
            logits = model.completion_logits(rollout.prompts, rollout.completion_ids, rollout.mask,
                                             self.cfg.num_generations)
            logp = selective_logprobs(logits, rollout.completion_ids, self.cfg.temperature)
        distributed.reshard(model, self.dist)
        return logp

    def make_rollout(self, batch: Union[Batch, common.Shard], completions: Optional[GenerationOutput] = None) -> Rollout:
        """Generate (or take ``completions``), decode, score, normalise, and compute the reference
        and old log-probs the loss will need. ``batch`` is a Batch or this rank's Shard of one."""
        cfg, G = self.cfg, self.cfg.num_generations
        shard = batch if isinstance(batch, common.Shard) else None
        batch = shard.batch if shard is not None else batch
        if cfg.modality_dropout:  # one draw per prompt, by (seed, step, sample id): resumes draw alike
            batch = modality_dropout.drop_modalities(batch, cfg.modality_dropout, cfg.seed, self.global_step + 1)
        times: Dict[str, float] = {}
        t = time.perf_counter()
        prompts = self.prompt_inputs(batch)
        if completions is not None:
            generated = completions
        elif self.per_prompt:
            generated = self.generate(prompts, shard.positions if shard is not None else None)
        else:
            generated = self.generate(prompts)
        ids = generated.completion_ids.to(self.device)
        mask = completion_mask(generated.lengths.to(self.device), ids.shape[1])
        texts = generated.texts if generated.texts is not None else [
            self.model.processor.decode(row[:n]) for row, n in zip(ids.tolist(), generated.lengths.tolist())]
        times["generate"] = time.perf_counter() - t

        t = time.perf_counter()
        samples = [s for s in batch.samples for _ in range(G)]
        completions, columns = reward_inputs(samples, texts, cfg.reward_completions)
        scores = score_batch(completions, funcs=self.reward_funcs, weights=self.reward_weights,
                             mode=cfg.reward_mode, labels=self.label_set, trainer_state=self.state_for_rewards(),
                             completion_ids=[row[:n] for row, n in zip(ids.tolist(), mask.sum(1).tolist())],
                             **columns)
        num_invalid = self.check_rewards(scores, samples)
        rewards = torch.from_numpy(np.stack([scores[n] for n in self.reward_names], 1))  # float64, for logs
        advantages, _, group_std = step_advantages(rewards, G, self.reward_weights, cfg.scale_rewards, self.device)
        times["score"] = time.perf_counter() - t

        rollout = Rollout(batch, prompts, ids, mask, list(texts), rewards,
                          torch.from_numpy(scores["total"]), advantages, group_std,
                          times=times, ghost=bool(shard is not None and shard.ghost), num_invalid=num_invalid)
        if cfg.mask_truncated_completions:  # TRL: truncated rows leave the loss and its normalisers
            rollout.loss_mask = mask & ~self.truncated(ids, mask)[:, None]
        t = time.perf_counter()
        if self.ref is not None:
            rollout.ref_logp = self.sequence_logprobs(self.ref, rollout)
        if cfg.num_iterations > 1 or self.steps_per_generation > cfg.gradient_accumulation_steps:
            # the sampling policy's log-probs, once for all reuses and the later optimizer steps
            rollout.old_logp = self.sequence_logprobs(self.model, rollout)
        times["reference"] = time.perf_counter() - t
        return rollout

    def truncated(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N,) bool: completions whose last generated token is not an EOS (they hit
        max_completion_length)."""
        ends = ids.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
        return ~torch.isin(ends, torch.tensor(self.model.processor.eos_token_ids, device=ids.device))

    def state_for_rewards(self) -> RewardTrainerState:
        """``trainer_state`` for reward functions (TRL passes its TrainerState)."""
        return RewardTrainerState(global_step=self.global_step, max_steps=self.last_step,
                                  epoch=self.stream.epoch if self.stream is not None else 0)

    def check_rewards(self, scores: Dict[str, np.ndarray], samples: Sequence[Any]) -> int:
        """Validate every reward column in place: NaN is "not scored" (it counts 0 in the total);
        +-inf or ``|value| > reward_bound`` raise a :class:`faults.TrainingError` naming the function
        and the sample, or with ``on_invalid_reward: skip`` become NaN too and are counted (the
        total is recomputed). Returns the number of values set aside."""
        cfg, G = self.cfg, self.cfg.num_generations
        set_aside = 0
        for name in self.reward_names:
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
            scores["total"] = weighted_total([scores[n] for n in self.reward_names], self.reward_weights)
        return set_aside

    def policy_loss(self, rollout: Rollout, *, entropy: bool = True) -> tuple:
        """:func:`micro_batch_loss` of the current policy on a rollout: (loss, metrics)."""
        cfg = self.cfg
        with common.autocast(cfg, self.device):
            logits = self.policy_logits(rollout.prompts, rollout.completion_ids, rollout.mask, cfg.num_generations)
        return micro_batch_loss(logits, rollout, cfg, self.dist, entropy=entropy)

    def generation_done(self, step: int) -> bool:
        """Whether step ``step`` used the last micro-batch of its generation batch's last reuse (the
        buffer is spent: a checkpoint here resumes exactly)."""
        ga = self.cfg.gradient_accumulation_steps
        return (step * ga) % (self.steps_per_generation * self.cfg.num_iterations) == 0

    # --- one optimizer step ------------------------------------------------------------------
    def train_step(self, step: int) -> Dict[str, Any]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches. Micro-batch ``k``
        of the run (counted from 0 over every step) trains on ``buffer[k % steps_per_generation]``
        of the generation batch made at the last ``k`` divisible by ``steps_per_generation *
        num_iterations`` (TRL's ``_prepare_inputs``): a new generation batch of
        ``steps_per_generation`` micro-batches is generated, scored and normalised there, as one."""
        cfg = self.cfg
        self.global_step = step - 1  # optimizer steps done when this step's rewards are scored
        t0 = time.perf_counter()
        ga, spg = cfg.gradient_accumulation_steps, self.steps_per_generation
        losses: List[float] = []
        parts: List[Dict[str, Any]] = []
        step_rollouts: List[Rollout] = []
        generated: List[Rollout] = []
        policy_time = 0.0
        divisor = accumulation_divisor(cfg.loss_type, ga)
        module = self.policy_logits if isinstance(self.policy_logits, torch.nn.Module) else self.model
        logged = step % cfg.logging_steps == 0 or step == self.last_step
        for i, (generate, index) in enumerate(micro_batch_plan(step, ga, spg, cfg.num_iterations)):
            if generate or not self.buffer:
                self.buffer = [self.make_rollout(self.stream.next()) for _ in range(spg)]
                normalise_step(self.buffer, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
                               group_size=cfg.num_generations, reward_weights=self.reward_weights, dist=self.dist,
                               aggregation=cfg.multi_objective_aggregation)
                self.write_completions(step, self.buffer)
                generated += self.buffer
            rollout = self.buffer[index]
            t = time.perf_counter()
            with distributed.accumulating(module, self.dist, last=i == ga - 1):
                loss, metrics = self.policy_loss(rollout, entropy=logged)
                (loss * rollout.weight / divisor).backward()
            policy_time += time.perf_counter() - t
            losses.append(float(loss.detach()) * rollout.weight / self.dist.world_size)
            parts.append(metrics)
            step_rollouts.append(rollout)
        self.rollouts = step_rollouts
        fresh = bool(generated)

        t = time.perf_counter()
        grad_norm = common.clip_gradients(self.params, cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        if not self.guard.check(step, {"loss": sum(losses), "grad_norm": grad_norm}, self.dist):
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ref is not None and cfg.sync_ref_model and step % cfg.ref_model_sync_steps == 0:
            self.sync_reference()
        optimizer_time = time.perf_counter() - t

        step_time = time.perf_counter() - t0
        record = {"step": step, "epoch": self.stream.epoch, "learning_rate": lr, "grad_norm": grad_norm}
        record.update(self.loss_metrics(losses, parts))
        record.update(self.rollout_metrics(self.rollouts))
        if self.cfg.modality_dropout:
            record.update(modality_dropout.dropout_metrics(
                [s for r in self.rollouts if not r.ghost for s in r.batch.samples], self.dist))
        invalid = [float(sum(r.num_invalid for r in generated))]
        record["rewards/num_invalid"] = int(self.dist.sum(invalid)[0])
        if fresh:  # TRL's num_tokens: prompt + completion tokens of every generated row, all ranks, cumulative
            seen = sum(int(r.mask.sum()) + int(r.prompts["attention_mask"].sum()) * cfg.num_generations
                       for r in generated if not r.ghost)
            self.num_tokens += int(self.dist.sum([seen])[0])
        record["num_tokens"] = self.num_tokens
        record["nonfinite_steps"] = self.guard.total
        record["skipped_samples"] = self.stream.skipped_samples
        gen_times = {k: sum(r.times[k] for r in generated) for k in ("generate", "score", "reference")}
        record.update({f"time/{k}": v for k, v in gen_times.items()})
        record.update({"time/policy": policy_time, "time/optimizer": optimizer_time, "step_time": step_time})
        tokens = sum(int(r.mask.sum()) + int(r.prompts["attention_mask"].sum()) * cfg.num_generations
                     for r in self.rollouts)
        record["tokens_per_second"] = tokens / step_time if step_time > 0 else 0.0
        self.no_signal_steps = no_signal_streak(self.no_signal_steps, record, say=self.dist.is_main)
        return record

    def loss_metrics(self, losses: Sequence[float], parts: Sequence[Dict[str, Any]]) -> Dict[str, float]:
        """The step's loss (the sum of the micro-batch losses as they enter backward) and the loss
        metrics (KL, entropy, clip ratios, vespo's phi: token- or sequence-weighted over the ranks,
        then averaged over micro-batches, as one process computes them over the whole batch)."""
        keys = [k for k in LOSS_METRIC_KEYS if k in parts[0]]
        sequence_level = self.cfg.importance_sampling_level == "sequence"
        numbers: List[float] = [sum(losses)]
        for r, m in zip(self.rollouts, parts):
            rows = 0.0 if r.ghost else float(r.mask.shape[0])
            tokens = 0.0 if r.ghost else float(r.loss_tokens.sum())
            units = {k: rows if k in ROW_METRICS or (sequence_level and k not in TOKEN_METRICS) else tokens
                     for k in keys}
            numbers += [units[k] for k in keys] + [float(m[k]) * units[k] for k in keys]
        if self.dist.enabled:
            numbers = self.dist.sum(numbers)
        out = {"loss": numbers[0] / accumulation_divisor(self.cfg.loss_type, len(parts))}
        width = 2 * len(keys)
        for j, key in enumerate(keys):
            values = []
            for i in range(len(parts)):
                den, num = numbers[1 + i * width + j], numbers[1 + i * width + len(keys) + j]
                values.append(num / den if den else 0.0)
            out[key] = float(np.mean(values))
        if "clip_ratio/low_min" in parts[0]:
            # TRL: per global micro-batch, the least / largest per-sequence clip fraction over the ranks
            extremes = [(nan, nan) if r.ghost else (float(m["clip_ratio/low_min"]), float(m["clip_ratio/high_max"]))
                        for r, m in zip(self.rollouts, parts)]
            ranks = self.dist.gather(extremes)
            low = [_nan_reduce([rank[i][0] for rank in ranks], min) for i in range(len(parts))]
            high = [_nan_reduce([rank[i][1] for rank in ranks], max) for i in range(len(parts))]
            out["clip_ratio/low_min"] = float(np.mean(low))
            out["clip_ratio/high_max"] = float(np.mean(high))
        return out

    def rollout_metrics(self, rollouts: Sequence[Rollout]) -> Dict[str, float]:
        """TRL's reward and completion metrics over the completions of ``rollouts`` (of every rank)."""
        local = [(r.rewards.double(), r.total.double(), r.group_std.double().cpu(), r.mask.sum(1).double().cpu(),
                  r.completion_ids.gather(1, (r.mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1).cpu())
                 for r in rollouts if not r.ghost]
        parts = [p for rank in self.dist.gather(local) for p in rank]
        rewards, total, group_std, lengths, ends = (torch.cat(column) for column in zip(*parts))
        eos = torch.tensor(self.model.processor.eos_token_ids, device=ends.device)
        out = {"reward": float(total.mean()),
               "reward_std": float(total.std()) if total.numel() > 1 else 0.0,  # TRL: the std of all rewards
               "reward_std/group_mean": float(group_std.mean()),
               "frac_reward_zero_std": float(torch.isclose(group_std, torch.zeros_like(group_std)).double().mean())}
        for i, name in enumerate(self.reward_names):
            col = rewards[:, i]
            col = col[~torch.isnan(col)]
            out[f"rewards/{name}/mean"] = float(col.mean()) if col.numel() else float("nan")
            out[f"rewards/{name}/std"] = float(col.std()) if col.numel() > 1 else 0.0
        out["completions/mean_length"] = float(lengths.mean())
        out["completions/max_length"] = float(lengths.max())
        out["completions/min_length"] = float(lengths.min())
        truncated = ~torch.isin(ends, eos)
        out["completions/clipped_ratio"] = float(truncated.double().mean())
        terminated = lengths[~truncated] if bool((~truncated).any()) else torch.zeros(1, dtype=lengths.dtype)
        out["completions/mean_terminated_length"] = float(terminated.mean())  # TRL: 0 when none ended
        out["completions/min_terminated_length"] = float(terminated.min())
        out["completions/max_terminated_length"] = float(terminated.max())
        return out

    def write_completions(self, step: int, rollouts: Sequence[Rollout]) -> None:
        """Append the rollouts' completions to completions.jsonl (rank 0 writes every rank's,
        micro-batch by micro-batch in rank order: the order of the global batch)."""
        local: List[List[str]] = []
        for r in rollouts:
            rows = []
            samples = [s for s in r.batch.samples for _ in range(self.cfg.num_generations)]
            for i, (sample, text) in enumerate(zip(samples, r.texts)):
                if r.ghost:
                    break
                row = {"step": step, "prompt_id": sample.id, "label": sample.label, "completion": text}
                if "dropped_modalities" in sample.extra:
                    row["dropped_modalities"] = sample.extra["dropped_modalities"]
                row.update({name: _finite(float(r.rewards[i, j])) for j, name in enumerate(self.reward_names)})
                row.update({"reward": float(r.total[i]), "advantage": float(r.advantages[i])})
                rows.append(json.dumps(row) + "\n")
            local.append(rows)
        ranks = self.dist.gather(local)
        if not self.dist.is_main:
            return
        ordered = [line for micro in range(len(rollouts)) for rank in ranks for line in rank[micro]]
        with open(self.out / "completions.jsonl", "a", encoding="utf-8") as fh:
            fh.writelines(ordered)
        if self.cfg.log_completions and (step % self.cfg.logging_steps == 0 or step == self.last_step):
            self.log_completions(step, [json.loads(line) for line in ordered])

    def log_completions(self, step: int, rows: Sequence[Dict[str, Any]]) -> None:
        """TRL's ``log_completions``: the step's completions as a table to the trackers, and the
        first ``num_completions_to_print`` (all when None) printed."""
        columns = list(rows[0]) if rows else []
        table = [[row[c] for c in columns] for row in rows]
        if self.trackers is not None:
            self.trackers.log_table(step, columns, table)
        shown = table if self.cfg.num_completions_to_print is None else table[:self.cfg.num_completions_to_print]
        if shown:
            tqdm.write(f"completions of step {step}:\n{markdown_table(columns, shown)}", file=sys.stderr)

    # --- reference model -----------------------------------------------------------------------
    @torch.no_grad()
    def sync_reference(self) -> None:
        """``ref <- alpha * policy + (1 - alpha) * ref`` over the reference's own parts (TRL)."""
        alpha = self.cfg.ref_model_mixup_alpha
        distributed.reshard(self.ref, self.dist)  # both sharded alike
        distributed.reshard(self.model, self.dist)
        for name, module in reference_parts(self.ref, self.model).items():
            for p_ref, p in zip(module.parameters(), getattr(self.model, name).parameters()):
                if p_ref is not p:  # a frozen tensor the reference shares stays as it is
                    p_ref.mul_(1.0 - alpha).add_(p.detach(), alpha=alpha)

    def _ref_state(self) -> Dict[str, torch.Tensor]:
        distributed.reshard(self.ref, self.dist)
        return {f"{name}.{k}": v for name, m in reference_parts(self.ref, self.model).items()
                for k, v in m.state_dict().items()}

    def _ref_load(self, state: Dict[str, torch.Tensor]) -> None:
        """Inverse of ``_ref_state``; full tensors are spread over a sharded reference."""
        for name, module in reference_parts(self.ref, self.model).items():
            prefix = name + "."
            distributed.load_module_state(module, {k[len(prefix):]: v for k, v in state.items()
                                                   if k.startswith(prefix)})

    # --- the loop --------------------------------------------------------------------------------
    def save(self, step: int) -> Path:
        extra: Dict[str, Any] = {} if self.per_prompt else {"sampler": self.sampler.get_state()}
        sharded: Dict[str, Any] = {}
        if self.ref is not None and self.cfg.sync_ref_model:  # the synced reference is part of the run's state
            if self.dist.enabled:
                sharded["reference"] = self._ref_state()
            else:
                extra["ref_model"] = self._ref_state()
        return common.save(self.cfg, step, self.model, self.optimizer, self.scheduler,
                           {"stage": "grpo", **self.stream.state(), "nonfinite_steps": self.guard.total,
                            "per_prompt_sampling": self.per_prompt, "max_steps": self.last_step,
                            "num_tokens": self.num_tokens}, extra,
                           dist=self.dist, sharded_states=sharded)

    def train(self) -> Path:
        """Run to ``last_step``; returns the folder of the final model (``output_dir``)."""
        try:
            return self._train()
        finally:
            self.lock.release()
            distributed.shutdown(self.dist)

    def _train(self) -> Path:
        cfg, start, main = self.cfg, self.start, self.dist.is_main
        metrics = None
        if main:
            common.write_run_config(cfg)
            metrics = MetricsLog(self.out / "metrics.jsonl", resume_step=start.step if start.folder else None)
            _truncate_completions(self.out / "completions.jsonl", start.step if start.folder else None)
        common.preflight_decode(cfg, self.train_data, self.collate)
        self.stream = common.make_stream(cfg, self.train_data, self.collate, start.state, self.dist)
        bar = common.progress_bar(self.last_step, start.step, "grpo", self.progress and main)
        save_pending = False
        final_record: Optional[Dict[str, Any]] = None
        saved: Optional[Path] = start.folder
        try:
            # SIGTERM / SIGUSR1 / SIGINT: save at the end of the reuse cycle (num_iterations), then stop
            with faults.StopSignals() as signals:
                if main:
                    self.trackers = metrics.trackers = Trackers(cfg, resume_step=start.step if start.folder else None)
                for step in range(start.step + 1, self.last_step + 1):
                    record = self.train_step(step)
                    bar.set_postfix(reward=f"{record['reward']:.3f}", step_s=f"{record['step_time']:.1f}", refresh=False)
                    bar.update(1)
                    if step == self.last_step:  # logged after the final model is written and evaluated
                        final_record, saved = record, self.save(step)
                        break
                    if self.eval_data is not None and common.eval_due(cfg, step, self.last_step):
                        record.update(common.run_evaluation(self.model, self.eval_data, self.collate, cfg, self.device,
                                                            self.dist, step))
                    if main and (step % cfg.logging_steps == 0 or "eval/error" in record or "eval/n" in record):
                        metrics.log(common.plain_numbers(record))
                    save_pending |= step % cfg.save_steps == 0
                    stop = signals.requested(self.dist)
                    if (save_pending or stop) and self.generation_done(step):
                        saved = self.save(step)
                        save_pending = False
                        if stop:
                            raise faults.Preempted(stop, step, saved)
                # the final model first (signals wait for it), then the final evaluation
                common.export_final(self.model, cfg, self.dist, self.last_step, saved)
                stop = signals.requested(self.dist)
                if final_record is not None:
                    if self.eval_data is not None and not stop:
                        final_record.update(common.run_evaluation(self.model, self.eval_data, self.collate, cfg,
                                                                  self.device, self.dist, self.last_step))
                    if main:
                        metrics.log(common.plain_numbers(final_record))
                if stop:
                    raise faults.Preempted(stop, self.last_step, saved, finished=True)
        finally:
            bar.close()
            self.stream.close()
            if metrics is not None:
                metrics.close()
            self.trackers = None
        if main:
            plot_curves(read_jsonl(self.out / "metrics.jsonl"),
                        ["reward", "rewards/accuracy/mean", "kl", "reward_std", "completions/mean_length",
                         "eval/accuracy"],
                        self.out / "grpo_curves.png", title="GRPO")
        return self.out


def run_grpo(cfg: GRPOConfig, *, loader: Optional[Callable] = None, progress: bool = True) -> Path:
    """Train with ``cfg`` (see the module docstring); returns the final model folder."""
    return GRPOTrainer(cfg, loader=loader, progress=progress).train()


nan = float("nan")


def _nan_reduce(values: Sequence[float], reduce: Callable) -> float:
    """``reduce`` (min or max) of the non-NaN values; NaN when all are NaN (TRL's nanmin / nanmax)."""
    kept = [v for v in values if not np.isnan(v)]
    return reduce(kept) if kept else nan


def _finite(x: float) -> Optional[float]:
    return x if np.isfinite(x) else None


def _truncate_completions(path: Path, resume_step: Optional[int]) -> None:
    """Fresh run: empty file; resume from step k: drop the rows written after step k."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if resume_step is None or not path.exists():
        path.write_text("")
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line)["step"] <= resume_step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(path)
