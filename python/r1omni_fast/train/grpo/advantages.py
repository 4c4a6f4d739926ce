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


#: ``group_advantages``'s epsilon in ``(R - mean) / (std + eps)`` (TRL's 1e-4).
EPS = 1e-4


def step_advantages(rewards: torch.Tensor, group_size: int, weights: Sequence[float], scale: str,
                    device: torch.device) -> tuple:
    """``group_advantages`` of a (N, R) float64 reward table (one column per function, NaN = not
    scored), as TRL: a completion that every function left unscored (all NaN) is left out of its
    group's mean and std (and of the batch std) and gets advantage 0. Returns (advantages (N,)
    float32, group mean (N // G,), group std (N // G,)) on ``device``."""
    unscorable = torch.isnan(rewards).all(1)
    if not bool(unscorable.any()):
        w = torch.tensor(list(weights), dtype=torch.float32, device=device)
        return group_advantages(rewards.to(device, torch.float32), group_size, weights=w, scale=scale)
    adv, mean, std = _scored_group_advantages(rewards, unscorable, group_size, weights, scale)
    return adv.to(device, torch.float32), mean.to(device, torch.float32), std.to(device, torch.float32)


def _scored_group_advantages(rewards: torch.Tensor, unscorable: torch.Tensor, group_size: int,
                             weights: Sequence[float], scale: str) -> tuple:
    """:func:`step_advantages` when some rows are unscorable, in float64 on the CPU: each group's
    scored rows are one group of ``group_advantages`` (groups with the same number of scored rows
    go in one call); a group with one scored row has mean that row's total, std 0 and advantage 0,
    one with none mean 0 and std 0; with ``scale="batch"`` the deviations are divided by the
    standard deviation of every scored total (0 below two)."""
    total = torch.nansum(rewards.double().cpu() * torch.tensor(list(weights), dtype=torch.float64), dim=1)
    scored = ~unscorable.cpu().view(-1, group_size)
    counts = scored.sum(1)
    adv = torch.zeros_like(total)
    mean = torch.zeros(counts.shape[0], dtype=torch.float64)
    std = torch.zeros_like(mean)
    for count in counts.unique().tolist():
        groups = torch.nonzero(counts == count).squeeze(1)
        rows = (groups[:, None] * group_size + torch.arange(group_size))[scored[groups]]  # group by group
        if count == 1:
            mean[groups] = total[rows]
        elif count > 1:
            adv[rows], mean[groups], std[groups] = group_advantages(
                total[rows], int(count), scale="none" if scale == "batch" else scale, eps=EPS)
    if scale == "batch":
        valid = total[~unscorable.cpu()]
        adv = adv / ((valid.std() if valid.numel() > 1 else torch.tensor(0.0, dtype=torch.float64)) + EPS)
    return adv, mean, std


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
