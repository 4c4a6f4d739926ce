"""PyTorch references: the CPU fallback of every kernel and the basis of their tests.

Log-probabilities are computed chunk by chunk over the vocabulary (an online logsumexp), so the
largest temporary is ``(B, L, VOCAB_CHUNK)`` in the accumulation dtype, never ``(B, L, V)`` fp32.
Accumulation is fp32, or fp64 for fp64 logits (so ``torch.autograd.gradcheck`` applies).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from .objective import METRIC_ENTROPY, METRIC_LOGP, LossSpec, check_token_ids, grpo_objective, token_weights

#: Vocabulary entries per chunk of the reference logsumexp / gradient.
VOCAB_CHUNK = 8192


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunked_logsumexp(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logsumexp(logits / T, -1)`` with an online max/sum over vocabulary chunks."""
    acc = _accumulation_dtype(logits.dtype)
    lse = None
    for start in range(0, logits.shape[-1], VOCAB_CHUNK):
        chunk_lse = torch.logsumexp(logits[..., start : start + VOCAB_CHUNK].to(acc) / temperature, dim=-1)
        lse = chunk_lse if lse is None else torch.logaddexp(lse, chunk_lse)
    return lse


def _gather_logp(logits: torch.Tensor, ids: torch.Tensor, temperature: float, lse: torch.Tensor) -> torch.Tensor:
    safe_ids = ids.clamp(0, logits.shape[-1] - 1).long()  # masked positions may hold -100
    picked = logits.gather(-1, safe_ids.unsqueeze(-1)).squeeze(-1).to(lse.dtype)
    return picked / temperature - lse


class _ChunkedLogProbs(torch.autograd.Function):
    """``logp[b, t] = log_softmax(logits[b, t] / T)[ids[b, t]]``;
    backward ``dlogits[b, t, j] = dlogp[b, t] / T * (1[j = ids[b, t]] - softmax(logits[b, t] / T)[j])``."""

    @staticmethod
    def forward(ctx, logits, ids, temperature):
        lse = _chunked_logsumexp(logits, temperature)
        ctx.save_for_backward(logits, ids, lse)
        ctx.temperature = temperature
        return _gather_logp(logits, ids, temperature, lse)

    @staticmethod
    @once_differentiable
    def backward(ctx, dlogp):
        logits, ids, lse = ctx.saved_tensors
        T = ctx.temperature
        grad = torch.empty_like(logits)
        scale = (dlogp / T).unsqueeze(-1)
        for start in range(0, logits.shape[-1], VOCAB_CHUNK):
            chunk = logits[..., start : start + VOCAB_CHUNK].to(lse.dtype)
            g = -scale * torch.exp(chunk / T - lse.unsqueeze(-1))
            local = ids.long() - start
            inside = (local >= 0) & (local < chunk.shape[-1])
            g.scatter_add_(-1, local.clamp(0, chunk.shape[-1] - 1).unsqueeze(-1), (scale * inside.unsqueeze(-1)))
            grad[..., start : start + VOCAB_CHUNK] = g
        return grad, None, None


def token_entropy_reference(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``H = sum_j p_j (lse(z) - z_j)``, ``p = softmax(z)``, ``z = logits / T``, per position, no
    grad: (B, L) fp32 (fp64 for fp64 logits). Every term is >= 0, so nothing cancels (the form
    ``lse - sum p z`` loses ~1e-4 in fp32 for peaked rows). Two passes over vocabulary chunks
    (logsumexp, then the sum), so the largest temporary is ``(B, L, VOCAB_CHUNK)``."""
    with torch.no_grad():
        lse = _chunked_logsumexp(logits, temperature).unsqueeze(-1)
        entropy = torch.zeros_like(lse[..., 0])
        for start in range(0, logits.shape[-1], VOCAB_CHUNK):
            surprise = lse - logits[..., start : start + VOCAB_CHUNK].to(lse.dtype) / temperature
            entropy += (torch.exp(-surprise) * surprise).sum(-1)
        return entropy


def selective_logprobs_reference(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log_softmax(logits / T, -1).gather(-1, ids)`` in fp32 (fp64 for fp64 logits), no grad."""
    with torch.no_grad():
        return _gather_logp(logits, ids, temperature, _chunked_logsumexp(logits, temperature))


def grpo_loss_reference(
    logits: torch.Tensor,
    completion_ids: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    old_logp: Optional[torch.Tensor],
    ref_logp: Optional[torch.Tensor],
    policy_mask: Optional[torch.Tensor],
    spec: LossSpec,
    num_items_in_batch,
    return_entropy: bool = False,
) -> "tuple[torch.Tensor, dict]":
    """GRPO loss (DESIGN.md §4) with chunked log-probs and autograd; ``mask`` is a float (B, L) tensor."""
    check_token_ids(completion_ids, mask != 0, logits.shape[-1])
    entropy = None
    if return_entropy:
        entropy = token_entropy_reference(logits.detach(), spec.temperature) * (mask != 0)
    logp = _ChunkedLogProbs.apply(logits, completion_ids, spec.temperature)
    mask = mask.to(logp.dtype)
    weights = token_weights(mask, spec.loss_type, spec.max_completion_length, num_items_in_batch)
    loss, metrics = grpo_objective(logp, mask, weights, advantages, old_logp, ref_logp, spec, policy_mask)
    metrics[METRIC_LOGP] = (logp * (mask != 0)).detach()
    if entropy is not None:
        metrics[METRIC_ENTROPY] = entropy
    return loss, metrics


def group_advantages_reference(
    rewards: torch.Tensor, group_size: int, weights: Optional[torch.Tensor], scale: str, eps: float
) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """``A = (R - mean_g) / (std_g + eps)`` ("group"), ``/ (std_batch + eps)`` ("batch") or no division
    ("none"); ``R = nansum_f(w_f * rewards[:, f])``; std with Bessel's correction. The group mean is
    ``R_0 + sum_i (R_i - R_0) / G`` so that a group of equal rewards gets advantages of exactly 0."""
    acc = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    r = rewards.to(acc)
    if r.dim() == 2:
        w = torch.ones(r.shape[1], dtype=acc, device=r.device) if weights is None else weights.to(acc)
        r = torch.nansum(r * w, dim=1)
    grouped = r.view(-1, group_size)
    first = grouped[:, :1]
    mean = first + (grouped - first).sum(1, keepdim=True) / group_size
    dev = grouped - mean
    std = torch.sqrt((dev * dev).sum(1) / (group_size - 1))
    if scale == "group":
        adv = dev / (std.unsqueeze(1) + eps)
    elif scale == "batch":
        adv = dev / (r.std() + eps)
    else:
        adv = dev
    return adv.reshape(-1), mean.squeeze(1), std
