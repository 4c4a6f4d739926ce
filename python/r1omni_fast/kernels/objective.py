"""The GRPO objective on per-token log-probabilities (DESIGN.md §4), in plain PyTorch.

Every backend shares this module: it validates the arguments, turns the mask into the per-token
normalisation weights, and evaluates the surrogate + KL objective on ``(B, L)`` log-probabilities
(the reference backend and the sequence-level Triton path differentiate through it with autograd;
the fused token-level kernel evaluates the same formulas in registers). Everything here is
``O(B * L)``; nothing touches the vocabulary.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")

#: TRL's metric names; ``logp`` holds the detached per-token log-probabilities.
METRIC_KL = "kl"
METRIC_CLIP_LOW = "clip_ratio/low_mean"
METRIC_CLIP_HIGH = "clip_ratio/high_mean"
METRIC_CLIP_REGION = "clip_ratio/region_mean"
METRIC_LOGP = "logp"


def validate_grpo_args(
    logits: torch.Tensor,
    completion_ids: torch.Tensor,
    advantages: torch.Tensor,
    mask: Optional[torch.Tensor],
    old_logp: Optional[torch.Tensor],
    ref_logp: Optional[torch.Tensor],
    beta: float,
    eps_low: float,
    eps_high: float,
    delta: Optional[float],
    temperature: float,
    loss_type: str,
    importance_sampling_level: str,
    max_completion_length: Optional[int],
) -> None:
    """Raise ``ValueError`` naming the offending argument when the inputs do not fit together."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, L, V), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating tensor, got {logits.dtype}")
    B, L, _ = logits.shape
    if tuple(completion_ids.shape) != (B, L):
        raise ValueError(
            f"completion_ids must be (B, L) = {(B, L)} to match logits (logits[b, t] predicts "
            f"completion_ids[b, t]; drop the last logit position), got {tuple(completion_ids.shape)}"
        )
    if completion_ids.dtype.is_floating_point or completion_ids.dtype == torch.bool:
        raise ValueError(f"completion_ids must be an integer tensor, got {completion_ids.dtype}")
    if advantages.numel() != B or advantages.dim() > 2:
        raise ValueError(f"advantages must be (B,) or (B, 1) with B = {B}, got {tuple(advantages.shape)}")
    for name, t in (("mask", mask), ("old_logp", old_logp), ("ref_logp", ref_logp)):
        if t is not None and tuple(t.shape) != (B, L):
            raise ValueError(f"{name} must be (B, L) = {(B, L)}, got {tuple(t.shape)}")
    if beta != 0.0 and ref_logp is None:
        raise ValueError(f"beta = {beta} needs ref_logp (the reference model's log-probs); pass beta=0 without one")
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not (0.0 <= eps_low < 1.0) or not eps_high >= 0.0:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if delta is not None and not delta > 0.0:
        raise ValueError(f"delta caps the importance ratio and must be > 0 (usually > 1 + eps_high), got {delta}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(
            f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, got {importance_sampling_level!r}"
        )
    if max_completion_length is not None and max_completion_length < 1:
        raise ValueError(f"max_completion_length must be >= 1, got {max_completion_length}")


def check_token_ids(completion_ids: torch.Tensor, active: torch.Tensor, vocab_size: int) -> None:
    """Raise when an id of an active (unmasked) token is outside ``[0, vocab_size)``.

    Masked positions may hold anything (collators often put -100 there): they are never read.
    """
    bad = ((completion_ids < 0) | (completion_ids >= vocab_size)) & active
    if bool(bad.any()):
        b, t = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"completion_ids[{b}, {t}] = {int(completion_ids[b, t])} is outside the vocabulary [0, {vocab_size})"
        )


def token_weights(
    mask: torch.Tensor,
    loss_type: str,
    max_completion_length: Optional[int] = None,
    num_items_in_batch: Union[int, float, torch.Tensor, None] = None,
) -> torch.Tensor:
    """Per-token weights ``w`` such that the loss is ``sum_{b,t} w[b,t] * l[b,t]``.

    With ``m`` the (float) mask and ``B`` sequences:
    grpo ``m / (B * max(sum_t m, 1))``; bnpo ``m / max(sum m, 1)``;
    dr_grpo ``m / (B * max_completion_length)`` (default ``L``);
    dapo ``m / max(num_items_in_batch, 1)`` (default ``sum m``).
    """
    B, L = mask.shape
    if loss_type == "grpo":
        return mask / (B * mask.sum(-1, keepdim=True).clamp(min=1.0))
    if loss_type == "bnpo":
        return mask / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return mask / (B * (max_completion_length if max_completion_length is not None else L))
    if loss_type == "dapo":
        if num_items_in_batch is None:
            items = mask.sum()
        else:
            items = torch.as_tensor(num_items_in_batch, dtype=mask.dtype, device=mask.device)
        return mask / items.clamp(min=1.0)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def clip_metrics(
    mask: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    kl: Optional[torch.Tensor],
    importance_sampling_level: str,
) -> dict:
    """TRL's logged metrics from per-token (or, at sequence level, per-sequence) flags.

    ``kl`` = masked mean of the per-token k3 KL; clip fractions are masked means over tokens
    (token level) or plain means over sequences (sequence level, as TRL does); region = low | high.
    """
    m_sum = mask.sum().clamp(min=1.0)
    region = low | high
    if importance_sampling_level == "sequence":
        fractions = [x.to(mask.dtype).mean() for x in (low, high, region)]
    else:
        fractions = [(x.to(mask.dtype) * mask).sum() / m_sum for x in (low, high, region)]
    metrics = {METRIC_CLIP_LOW: fractions[0], METRIC_CLIP_HIGH: fractions[1], METRIC_CLIP_REGION: fractions[2]}
    if kl is not None:
        metrics[METRIC_KL] = (kl * mask).sum() / m_sum
    return {k: v.detach() for k, v in metrics.items()}


def grpo_objective(
    logp: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    advantages: torch.Tensor,
    old_logp: Optional[torch.Tensor],
    ref_logp: Optional[torch.Tensor],
    beta: float,
    eps_low: float,
    eps_high: float,
    delta: Optional[float],
    importance_sampling_level: str,
) -> "tuple[torch.Tensor, dict]":
    """GRPO loss from ``(B, L)`` log-probabilities (differentiable in ``logp``) and its metrics.

    ``log_w = logp - old_logp`` (token) or its masked mean ``sum_t m (logp - old) / max(sum_t m, 1)``
    (sequence); ``r = exp(log_w)``; ``l = -min(min(r, delta) * A, clip(r, 1 - eps_low, 1 + eps_high) * A)
    + beta * (exp(ref - logp) - (ref - logp) - 1)``; loss ``= sum w * l``. ``old_logp`` defaults to
    ``logp.detach()``. Clip flags use the uncapped ``r``: low ``r < 1 - eps_low and A < 0``, high
    ``r > 1 + eps_high and A > 0``.
    """
    # Masked positions may hold garbage log-probs (padding ids, -100): pin them to 0 so that
    # exp(ref - logp) cannot overflow into an inf * 0 = NaN gradient.
    active = mask != 0
    logp = torch.where(active, logp, 0.0)
    adv = advantages.reshape(-1, 1).to(logp.dtype)
    old = logp.detach() if old_logp is None else torch.where(active, old_logp.to(logp.dtype), 0.0)
    log_ratio = logp - old
    if importance_sampling_level == "sequence":
        log_w = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
    else:
        log_w = log_ratio
    ratio = torch.exp(log_w)
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    capped = torch.clamp(ratio, max=delta) if delta is not None else ratio
    per_token = -torch.min(capped * adv, clipped * adv)
    kl = None
    if ref_logp is not None:
        ref_minus = torch.where(active, ref_logp.to(logp.dtype), 0.0) - logp
        kl = torch.exp(ref_minus) - ref_minus - 1.0
        if beta != 0.0:
            per_token = per_token + beta * kl
    loss = (per_token * weights.to(logp.dtype)).sum()
    low = (ratio < 1.0 - eps_low) & (adv < 0)
    high = (ratio > 1.0 + eps_high) & (adv > 0)
    if importance_sampling_level == "sequence":  # one flag per sequence, (B, 1) -> (B,)
        low, high = low.reshape(-1), high.reshape(-1)
    metrics = clip_metrics(mask.to(logp.dtype), low, high, kl, importance_sampling_level)
    return loss, metrics
