"""The policy loss of one micro-batch (``grpo_loss`` with TRL's entropy and off-policy masks)
and the loss settings' warnings."""

from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import torch

from r1omni_fast.config import GRPOConfig
from r1omni_fast.kernels import grpo_loss, selective_logprobs, token_entropy
from r1omni_fast.kernels.objective import CLIPPED_LOSS_TYPES, TOKEN_COUNT_LOSS_TYPES, LossSpec
from r1omni_fast.train import distributed

log = logging.getLogger(__name__)


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


def accumulation_divisor(loss_type: str, micro_batches: int) -> int:
    """What each micro-batch's loss is divided by before its backward, as in TRL's GRPOTrainer:
    grpo, bnpo, dr_grpo, sapo and luspo by the accumulation count; dapo, cispo and vespo by
    nothing, since their ``num_items_in_batch`` already counts the tokens of every micro-batch of
    the step."""
    return 1 if loss_type in TOKEN_COUNT_LOSS_TYPES else int(micro_batches)


def loss_warnings(cfg: GRPOConfig) -> List[str]:
    """The warnings TRL's GRPOTrainer gives for this loss set-up (logged once, by rank 0)."""
    out = []
    if cfg.importance_sampling_level == "sequence" and cfg.loss_type in ("bnpo", "dr_grpo", "dapo", "cispo"):
        out.append(sequence_level_warning(cfg.loss_type))
    if cfg.loss_type == "vespo" and cfg.importance_sampling_level != "token":
        out.append("loss_type: vespo computes sequence-level importance weights itself: set "
                   "importance_sampling_level: token (the default)")
    return out


def sequence_level_warning(loss_type: str) -> str:
    """What TRL warns when sequence-level importance sampling meets a loss that sums tokens."""
    return (f"importance_sampling_level: sequence with loss_type: {loss_type}: the loss sums per-token terms, so "
            "each sequence weighs by its completion length instead of the per-sequence objective of GSPO; "
            "set loss_type: grpo to reproduce the GSPO paper's setup")


nan = float("nan")


def _nan_reduce(values: Sequence[float], reduce: Callable) -> float:
    """``reduce`` (min or max) of the non-NaN values; NaN when all are NaN (TRL's nanmin / nanmax)."""
    kept = [v for v in values if not np.isnan(v)]
    return reduce(kept) if kept else nan
