"""Advantages: each group's rewards normalised as TRL does (``scale_rewards``, completions
no function scored left out), and a generation batch normalised as one."""

from __future__ import annotations

import logging
from typing import List, Sequence

import torch

from r1omni_fast.kernels import group_advantages
from r1omni_fast.kernels.objective import TOKEN_COUNT_LOSS_TYPES
from r1omni_fast.train import distributed
from r1omni_fast.train.grpo.rollout import Rollout

log = logging.getLogger(__name__)


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


def normalise_step(rollouts: Sequence[Rollout], *, loss_type: str, scale_rewards: str, group_size: int,
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
