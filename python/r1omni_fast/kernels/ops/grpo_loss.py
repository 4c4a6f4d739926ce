"""Triton kernels for the GRPO loss head: log-probabilities, loss and gradient from logits.

Token-level importance sampling (``_grpo_token_kernel``): the gradient of the loss w.r.t. a token's
log-prob depends only on that token (its ratio, its KL term) and on normalisers that follow from the
mask, so one program per row computes the row's logsumexp (pass 1 over the vocabulary), the token's
loss, KL and clip flags, and then, while the row is still in L2, its gradient (pass 2, last block
first so the most recently read blocks are reused first), written straight into the logits buffer
when allowed. The logits are read about once from memory and written once; backward only rescales
when the incoming gradient is not 1 (a device-side check, no host sync).

Sequence-level importance sampling (GSPO) couples the tokens of a sequence, so it takes two passes:
``_logprobs_kernel`` in forward, the ``(B, L)`` objective by autograd, ``_logprobs_backward_kernel``
in backward (with the incoming gradient folded in).

Rows are handled by a persistent grid (a few programs per SM, each looping over rows) so that the
rows in flight fit in L2. All arithmetic is fp32 whatever the logits dtype; no ``(B, L, V)``
temporary is ever allocated (the gradient either overwrites the logits or, with
``inplace_grad=False``, goes to one buffer of the logits' dtype).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Iterator, Optional

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from ..objective import (
    METRIC_CISPO_CLIP, METRIC_CLIP_HIGH, METRIC_CLIP_LOW, METRIC_CLIP_REGION, METRIC_ENTROPY, METRIC_LOGP,
    LossSpec, check_token_ids, clip_metric_names, clip_metrics, grpo_objective, token_weights,
)


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """Launch parameters of the row kernels on a GPU.

    ``block_v``: vocabulary entries per loop step; ``num_warps``: warps per program;
    ``programs_per_sm``: persistent programs per streaming multiprocessor (rows in flight =
    SMs x programs_per_sm, which bounds the L2 working set of the second pass).
    """

    block_v: int = 4096
    num_warps: int = 16
    programs_per_sm: int = 2


_config = LaunchConfig()

#: Block size under TRITON_INTERPRET=1: small, so that CPU tests walk the multi-block online path.
INTERPRETER_BLOCK_V = 64


@contextlib.contextmanager
def launch_config(**overrides) -> Iterator[LaunchConfig]:
    """Temporarily override fields of the GPU launch configuration (used by bench/loss.py)."""
    global _config
    previous = _config
    _config = dataclasses.replace(previous, **overrides)
    try:
        yield _config
    finally:
        _config = previous


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _launch(n_rows: int, vocab: int, device: torch.device) -> "tuple[tuple[int], int, dict]":
    """(grid, block_v, launch options) for a row kernel."""
    # FMA contraction requested explicitly: Triton warns when it is left to its changing default.
    options = {"num_warps": _config.num_warps, "enable_fp_fusion": True}
    if _interpreting():
        return (max(1, min(n_rows, 4)),), INTERPRETER_BLOCK_V, options
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    grid = (max(1, min(n_rows, sms * _config.programs_per_sm)),)
    return grid, min(_config.block_v, triton.next_power_of_2(vocab)), options


# ----------------------------------------------------------------------------------------------
# Row helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _row_logsumexp(row_ptr, vocab, inv_temperature, BLOCK_V: tl.constexpr):
    """``log(sum_j exp(x_j / T))`` of one row, online (running max and rescaled sum) in fp32."""
    offs = tl.arange(0, BLOCK_V)
    m = float("-inf")
    s = 0.0
    for start in range(0, vocab, BLOCK_V):
        cols = start + offs
        x = tl.load(row_ptr + cols, mask=cols < vocab, other=float("-inf"), eviction_policy="evict_last")
        x = x.to(tl.float32) * inv_temperature
        m_new = tl.maximum(m, tl.max(x, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    return m + tl.log(s)


@triton.jit
def _row_logsumexp_entropy(row_ptr, vocab, inv_temperature, BLOCK_V: tl.constexpr):
    """``(lse, H)`` of one row, online in fp32: with ``z = x / T``, running max ``m``,
    ``s = sum_j exp(z_j - m)`` and ``d = sum_j exp(z_j - m) (m - z_j)``, ``lse = m + log s`` and
    ``H = sum_j p_j (lse - z_j) = log s + d / s``: both terms are >= 0 and so is every addend of
    ``d`` (a new max ``m'`` rescales ``d`` to ``exp(m - m') (d + s (m' - m))``), so nothing cancels."""
    offs = tl.arange(0, BLOCK_V)
    m = float("-inf")
    s = 0.0
    d = 0.0
    for start in range(0, vocab, BLOCK_V):
        cols = start + offs
        x = tl.load(row_ptr + cols, mask=cols < vocab, other=float("-inf"), eviction_policy="evict_last")
        x = x.to(tl.float32) * inv_temperature
        m_new = tl.maximum(m, tl.max(x, 0))
        alpha = tl.exp(m - m_new)
        # the where()s pick 0 before multiplying: 0 * inf (first block, -inf entries) is never formed
        d = alpha * (d + s * tl.where(s > 0.0, m_new - m, 0.0))
        e = tl.exp(x - m_new)
        d += tl.sum(e * tl.where(e > 0.0, m_new - x, 0.0), 0)
        s = s * alpha + tl.sum(e, 0)
        m = m_new
    log_s = tl.log(s)
    return m + log_s, log_s + d / s


@triton.jit
def _store_row_grad(row_ptr, grad_row_ptr, target, lse, coef, vocab, inv_temperature, BLOCK_V: tl.constexpr):
    """``grad[j] = coef / T * (1[j = target] - exp(x_j / T - lse))``, last block first.

    ``grad_row_ptr`` may equal ``row_ptr``: every element is read before it is overwritten.
    """
    offs = tl.arange(0, BLOCK_V)
    n_blocks = tl.cdiv(vocab, BLOCK_V)
    scale = coef * inv_temperature
    for k in range(0, n_blocks):
        cols = (n_blocks - 1 - k) * BLOCK_V + offs
        valid = cols < vocab
        x = tl.load(row_ptr + cols, mask=valid, other=0.0, eviction_policy="evict_first").to(tl.float32)
        prob = tl.exp(x * inv_temperature - lse)
        grad = scale * (tl.where(cols == target, 1.0, 0.0) - prob)
        tl.store(grad_row_ptr + cols, grad.to(grad_row_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _store_row_zeros(grad_row_ptr, vocab, BLOCK_V: tl.constexpr):
    offs = tl.arange(0, BLOCK_V)
    for start in range(0, vocab, BLOCK_V):
        cols = start + offs
        tl.store(grad_row_ptr + cols, tl.zeros([BLOCK_V], dtype=grad_row_ptr.dtype.element_ty), mask=cols < vocab)


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _grpo_token_kernel(
    logits_ptr, grad_ptr, ids_ptr, weight_ptr, adv_ptr, old_ptr, ref_ptr, pmask_ptr,
    logp_ptr, loss_ptr, kl_ptr, clip_ptr, entropy_ptr,
    n_rows, seq_len, vocab, stride_lb, stride_lt, stride_gb, stride_gt,
    inv_temperature, beta, clip_low, clip_high, delta, sapo_pos, sapo_neg,
    HAS_OLD: tl.constexpr, HAS_REF: tl.constexpr, HAS_DELTA: tl.constexpr, HAS_PMASK: tl.constexpr,
    KL_TIMES_RATIO: tl.constexpr, WRITE_GRAD: tl.constexpr, WRITE_ENTROPY: tl.constexpr, LOSS_KIND: tl.constexpr,
    BLOCK_V: tl.constexpr,
):  # fmt: skip
    """Fused token-level GRPO for rows ``b * L + t`` with weight ``w != 0`` (others get zeros).

    ``logp = x_id / T - lse``; ``r = exp(logp - old)`` (1 without ``old``); the policy term ``p``:

    - LOSS_KIND 0 (clipped): ``-min(min(r, delta) A, clip(r, lo, hi) A)``, ``dp/dlogp = -A r c`` with
      ``c`` the slope of the chosen branch of the min (half of each on a tie, as ``torch.minimum``);
      clip code 1 = ``r < lo and A < 0``, 2 = ``r > hi and A > 0``;
    - 1 (cispo, ``hi`` = the cap): ``-min(r, hi) A logp``, ``dp/dlogp = -min(r, hi) A`` (the
      coefficient is not differentiated); clip code 2 = ``r > hi and A > 0``;
    - 2 (sapo): ``g = sigmoid(tau (r - 1))``, ``tau`` = sapo_pos if A > 0 else sapo_neg;
      ``-g 4 / tau A``, ``dp/dlogp = -4 A g (1 - g) r``; clip code 0.

    ``l = p pm + beta kl`` (``pm`` = policy mask, 1 without), ``kl = exp(ref - logp) - (ref - logp) - 1``
    (times ``r`` with KL_TIMES_RATIO: ``d(kl r)/dlogp = (1 - exp(ref - logp)) r + kl r``);
    grad row ``= w dl/dlogp / T (onehot - p)``. With WRITE_ENTROPY, the row's entropy from pass 1.
    """
    for row in range(tl.program_id(0).to(tl.int64), n_rows, tl.num_programs(0)):
        b = row // seq_len
        t = row - b * seq_len
        row_ptr = logits_ptr + b * stride_lb + t * stride_lt
        weight = tl.load(weight_ptr + row)
        if weight == 0.0:
            if WRITE_GRAD:
                _store_row_zeros(grad_ptr + b * stride_gb + t * stride_gt, vocab, BLOCK_V)
            tl.store(logp_ptr + row, 0.0)
            tl.store(loss_ptr + row, 0.0)
            tl.store(kl_ptr + row, 0.0)
            tl.store(clip_ptr + row, tl.zeros((), dtype=tl.int8))
            if WRITE_ENTROPY:
                tl.store(entropy_ptr + row, 0.0)
        else:
            if WRITE_ENTROPY:
                lse, entropy = _row_logsumexp_entropy(row_ptr, vocab, inv_temperature, BLOCK_V)
                tl.store(entropy_ptr + row, entropy)
            else:
                lse = _row_logsumexp(row_ptr, vocab, inv_temperature, BLOCK_V)
            target = tl.load(ids_ptr + row)
            logp = tl.load(row_ptr + target).to(tl.float32) * inv_temperature - lse
            adv = tl.load(adv_ptr + b)
            if HAS_OLD:
                ratio = tl.exp(logp - tl.load(old_ptr + row))
            else:
                ratio = logp * 0.0 + 1.0  # on-policy: old_logp = logp.detach()
            if LOSS_KIND == 0:
                clipped = tl.minimum(tl.maximum(ratio, clip_low), clip_high)
                slope_clipped = tl.where((ratio >= clip_low) & (ratio <= clip_high), 1.0, 0.0)
                if HAS_DELTA:
                    capped = tl.minimum(ratio, delta)
                    slope_capped = tl.where(ratio <= delta, 1.0, 0.0)
                else:
                    capped = ratio
                    slope_capped = ratio * 0.0 + 1.0
                s1 = capped * adv
                s2 = clipped * adv
                token_loss = -tl.minimum(s1, s2)
                slope_tie = 0.5 * (slope_capped + slope_clipped)
                slope = tl.where(s1 < s2, slope_capped, tl.where(s1 > s2, slope_clipped, slope_tie))
                dloss_dlogp = -adv * ratio * slope
                low = (ratio < clip_low) & (adv < 0.0)
                high = (ratio > clip_high) & (adv > 0.0)
                code = tl.where(low, 1, 0) + tl.where(high, 2, 0)
            elif LOSS_KIND == 1:
                coef = tl.minimum(ratio, clip_high)
                token_loss = -coef * adv * logp
                dloss_dlogp = -coef * adv
                code = tl.where((ratio > clip_high) & (adv > 0.0), 2, 0)
            else:
                tau = tl.where(adv > 0.0, sapo_pos, sapo_neg)
                gate = 1.0 / (1.0 + tl.exp(-tau * (ratio - 1.0)))
                token_loss = -gate * 4.0 / tau * adv
                dloss_dlogp = -4.0 * adv * gate * (1.0 - gate) * ratio
                code = tl.zeros((), dtype=tl.int32)  # no clip flags
            if HAS_PMASK:
                keep = tl.load(pmask_ptr + row)
                token_loss = token_loss * keep
                dloss_dlogp = dloss_dlogp * keep
            kl = logp * 0.0
            if HAS_REF:
                ref_minus = tl.load(ref_ptr + row) - logp
                exp_ref_minus = tl.exp(ref_minus)
                kl = exp_ref_minus - ref_minus - 1.0
                dkl = 1.0 - exp_ref_minus
                if KL_TIMES_RATIO:
                    dkl = (dkl + kl) * ratio
                    kl = kl * ratio
                # beta = 0 keeps the KL as a metric only (and an overflowing KL out of the loss).
                token_loss += tl.where(beta != 0.0, beta * kl, 0.0)
                dloss_dlogp += tl.where(beta != 0.0, beta * dkl, 0.0)
            tl.store(logp_ptr + row, logp)
            tl.store(loss_ptr + row, token_loss)
            tl.store(kl_ptr + row, kl)
            tl.store(clip_ptr + row, code.to(tl.int8))
            if WRITE_GRAD:
                _store_row_grad(
                    row_ptr, grad_ptr + b * stride_gb + t * stride_gt, target, lse, weight * dloss_dlogp,
                    vocab, inv_temperature, BLOCK_V,
                )


@triton.jit
def _logprobs_kernel(
    logits_ptr, ids_ptr, active_ptr, logp_ptr, lse_ptr, entropy_ptr,
    n_rows, seq_len, vocab, stride_lb, stride_lt, inv_temperature,
    HAS_ACTIVE: tl.constexpr, WRITE_ENTROPY: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    """``logp = x_id / T - lse`` and ``lse`` per row (and the entropy with WRITE_ENTROPY); rows
    with ``active == 0`` get zeros unread."""
    for row in range(tl.program_id(0).to(tl.int64), n_rows, tl.num_programs(0)):
        b = row // seq_len
        t = row - b * seq_len
        row_ptr = logits_ptr + b * stride_lb + t * stride_lt
        is_active = True
        if HAS_ACTIVE:
            is_active = tl.load(active_ptr + row) != 0.0
        if is_active:
            if WRITE_ENTROPY:
                lse, entropy = _row_logsumexp_entropy(row_ptr, vocab, inv_temperature, BLOCK_V)
                tl.store(entropy_ptr + row, entropy)
            else:
                lse = _row_logsumexp(row_ptr, vocab, inv_temperature, BLOCK_V)
            target = tl.load(ids_ptr + row)
            tl.store(logp_ptr + row, tl.load(row_ptr + target).to(tl.float32) * inv_temperature - lse)
            tl.store(lse_ptr + row, lse)
        else:
            tl.store(logp_ptr + row, 0.0)
            tl.store(lse_ptr + row, 0.0)
            if WRITE_ENTROPY:
                tl.store(entropy_ptr + row, 0.0)


@triton.jit
def _logprobs_backward_kernel(
    logits_ptr, grad_ptr, ids_ptr, dlogp_ptr, lse_ptr,
    n_rows, seq_len, vocab, stride_lb, stride_lt, stride_gb, stride_gt, inv_temperature,
    BLOCK_V: tl.constexpr,
):  # fmt: skip
    """``grad[b, t, j] = dlogp[b, t] / T * (1[j = id] - exp(x_j / T - lse))``; rows with ``dlogp = 0``
    are written as zeros without reading the logits."""
    for row in range(tl.program_id(0).to(tl.int64), n_rows, tl.num_programs(0)):
        b = row // seq_len
        t = row - b * seq_len
        grad_row_ptr = grad_ptr + b * stride_gb + t * stride_gt
        dlogp = tl.load(dlogp_ptr + row)
        if dlogp == 0.0:
            _store_row_zeros(grad_row_ptr, vocab, BLOCK_V)
        else:
            _store_row_grad(
                logits_ptr + b * stride_lb + t * stride_lt, grad_row_ptr, tl.load(ids_ptr + row),
                tl.load(lse_ptr + row), dlogp, vocab, inv_temperature, BLOCK_V,
            )


@triton.jit
def _scale_rows_kernel(grad_ptr, scale_ptr, n_rows, seq_len, vocab, stride_gb, stride_gt, BLOCK_V: tl.constexpr):
    """``grad *= scale`` unless ``scale == 1`` (then nothing is read or written)."""
    scale = tl.load(scale_ptr).to(tl.float32)
    if scale != 1.0:
        offs = tl.arange(0, BLOCK_V)
        for row in range(tl.program_id(0).to(tl.int64), n_rows, tl.num_programs(0)):
            b = row // seq_len
            t = row - b * seq_len
            grad_row_ptr = grad_ptr + b * stride_gb + t * stride_gt
            for start in range(0, vocab, BLOCK_V):
                cols = start + offs
                valid = cols < vocab
                g = tl.load(grad_row_ptr + cols, mask=valid, other=0.0).to(tl.float32) * scale
                tl.store(grad_row_ptr + cols, g.to(grad_ptr.dtype.element_ty), mask=valid)


# ----------------------------------------------------------------------------------------------
# Launchers and autograd Functions
# ----------------------------------------------------------------------------------------------


def _vocab_contiguous(logits: torch.Tensor) -> torch.Tensor:
    """The kernels take any (batch, time) strides but need unit stride over the vocabulary."""
    return logits if logits.stride(-1) == 1 else logits.contiguous()


def _gradient_buffer(logits: torch.Tensor, inplace_grad: bool) -> torch.Tensor:
    return logits if inplace_grad else torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


def logprobs_triton(
    logits: torch.Tensor, ids: torch.Tensor, temperature: float, active: Optional[torch.Tensor] = None,
    entropy: bool = False,
) -> "tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]":
    """(logp, lse, entropy or None), each (B, L) fp32; rows with ``active == 0`` are skipped (zeros)."""
    logits = _vocab_contiguous(logits)
    B, L, V = logits.shape
    logp = torch.empty((B, L), dtype=torch.float32, device=logits.device)
    lse = torch.empty_like(logp)
    ent = torch.empty_like(logp) if entropy else None
    if B * L == 0:
        return logp, lse, ent
    grid, block_v, options = _launch(B * L, V, logits.device)
    _logprobs_kernel[grid](
        logits, ids.contiguous(), active.contiguous() if active is not None else logp, logp, lse,
        ent if ent is not None else logp,
        B * L, L, V, logits.stride(0), logits.stride(1), 1.0 / temperature,
        HAS_ACTIVE=active is not None, WRITE_ENTROPY=entropy, BLOCK_V=block_v, **options,
    )  # fmt: skip
    return logp, lse, ent


def _scale_gradient_(grad: torch.Tensor, grad_output: torch.Tensor) -> None:
    B, L, V = grad.shape
    if B * L == 0:
        return
    grid, block_v, options = _launch(B * L, V, grad.device)
    scale = grad_output.detach().reshape(1).to(torch.float32)
    _scale_rows_kernel[grid](
        grad, scale, B * L, L, V, grad.stride(0), grad.stride(1), BLOCK_V=block_v, **options
    )


class _LogProbsFunction(torch.autograd.Function):
    """Differentiable selective log-probs (sequence-level and vespo path): two passes over the
    logits. Returns (logp, entropy); the entropy (zeros unless asked for) has no gradient."""

    @staticmethod
    def forward(ctx, logits, ids, active, temperature, inplace_grad, want_entropy):
        logits = _vocab_contiguous(logits)
        ids = ids.contiguous()
        logp, lse, entropy = logprobs_triton(logits, ids, temperature, active, want_entropy)
        if entropy is None:
            entropy = torch.zeros_like(logp)
        ctx.save_for_backward(logits, ids, lse)
        ctx.temperature = temperature
        ctx.inplace_grad = inplace_grad
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, dlogp, unused):
        logits, ids, lse = ctx.saved_tensors
        B, L, V = logits.shape
        grad = _gradient_buffer(logits, ctx.inplace_grad)
        if B * L:
            grid, block_v, options = _launch(B * L, V, logits.device)
            _logprobs_backward_kernel[grid](
                logits, grad, ids, dlogp.to(torch.float32).contiguous(), lse,
                B * L, L, V, logits.stride(0), logits.stride(1), grad.stride(0), grad.stride(1),
                1.0 / ctx.temperature, BLOCK_V=block_v, **options,
            )  # fmt: skip
        if grad is logits:
            torch.autograd.graph.increment_version(logits)  # anyone else who saved the logits must fail loudly
        return grad.detach(), None, None, None, None, None


#: The fused kernel's LOSS_KIND of each loss type it handles (token level; vespo takes two passes).
_LOSS_KIND = {"grpo": 0, "bnpo": 0, "dr_grpo": 0, "dapo": 0, "luspo": 0, "cispo": 1, "sapo": 2}


class _FusedTokenGRPOFunction(torch.autograd.Function):
    """Token-level GRPO: loss, metrics and (when logits need a gradient) the gradient in one pass."""

    @staticmethod
    def forward(ctx, logits, ids, weights, advantages, old_logp, ref_logp, policy_mask, spec, want_entropy,
                inplace_grad):  # fmt: skip
        write_grad = bool(ctx.needs_input_grad[0])
        logits = _vocab_contiguous(logits)
        B, L, V = logits.shape
        logp = torch.empty((B, L), dtype=torch.float32, device=logits.device)
        token_loss = torch.empty_like(logp)
        kl = torch.empty_like(logp)
        entropy = torch.zeros_like(logp) if want_entropy else None
        clip_code = torch.empty((B, L), dtype=torch.int8, device=logits.device)
        grad = _gradient_buffer(logits, inplace_grad) if write_grad else logits
        kind = _LOSS_KIND[spec.loss_type]
        clip_high = spec.eps_high if kind == 1 else 1.0 + spec.eps_high
        if B * L:
            grid, block_v, options = _launch(B * L, V, logits.device)
            _grpo_token_kernel[grid](
                logits, grad, ids, weights, advantages,
                old_logp if old_logp is not None else logp, ref_logp if ref_logp is not None else logp,
                policy_mask if policy_mask is not None else logp,
                logp, token_loss, kl, clip_code, entropy if entropy is not None else logp,
                B * L, L, V, logits.stride(0), logits.stride(1), grad.stride(0), grad.stride(1),
                1.0 / spec.temperature, float(spec.beta), 1.0 - spec.eps_low, clip_high,
                float(spec.delta or 0.0), float(spec.sapo_temperature_pos), float(spec.sapo_temperature_neg),
                HAS_OLD=old_logp is not None, HAS_REF=ref_logp is not None, HAS_DELTA=spec.delta is not None,
                HAS_PMASK=policy_mask is not None, KL_TIMES_RATIO=spec.bias_correction_kl,
                WRITE_GRAD=write_grad, WRITE_ENTROPY=want_entropy,
                LOSS_KIND=kind, BLOCK_V=block_v, **options,
            )  # fmt: skip
        loss = (token_loss * weights).sum()
        if entropy is None:
            entropy = torch.zeros_like(logp)
        ctx.grad_buffer = None
        if write_grad:
            if grad is logits:
                torch.autograd.graph.increment_version(logits)  # the logits now hold the gradient
            ctx.grad_buffer = grad
        ctx.mark_non_differentiable(logp, kl, clip_code, entropy)
        return loss, logp, kl, clip_code, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, *unused):
        grad = ctx.grad_buffer
        if grad is None:
            raise RuntimeError(
                "grpo_loss (token level) computes its gradient in forward and can be backpropagated once; "
                "call grpo_loss again instead of backward(retain_graph=True)"
            )
        ctx.grad_buffer = None
        _scale_gradient_(grad, grad_loss)
        return (grad.detach(),) + (None,) * 9


def grpo_loss_triton(
    logits: torch.Tensor,
    completion_ids: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    old_logp: Optional[torch.Tensor],
    ref_logp: Optional[torch.Tensor],
    policy_mask: Optional[torch.Tensor],
    spec: LossSpec,
    num_items_in_batch,
    return_entropy: bool,
    inplace_grad: bool,
) -> "tuple[torch.Tensor, dict]":
    """GRPO loss with the Triton kernels; ``mask`` is a float32 (B, L) tensor. See ``grpo_loss``."""
    check_token_ids(completion_ids, mask != 0, logits.shape[-1])
    weights = token_weights(mask, spec.loss_type, spec.max_completion_length, num_items_in_batch).contiguous()
    ids = completion_ids.contiguous()
    adv = advantages.reshape(-1).to(torch.float32).contiguous()
    old = old_logp.to(torch.float32).contiguous() if old_logp is not None else None
    ref = ref_logp.to(torch.float32).contiguous() if ref_logp is not None else None
    pmask = policy_mask.to(torch.float32).contiguous() if policy_mask is not None else None
    if spec.importance_sampling_level == "sequence" or spec.loss_type not in _LOSS_KIND:
        logp, entropy = _LogProbsFunction.apply(logits, ids, mask, spec.temperature, inplace_grad, return_entropy)
        loss, metrics = grpo_objective(logp, mask, weights, adv, old, ref, spec, pmask)
        metrics[METRIC_LOGP] = logp.detach()
    else:
        loss, logp, kl, clip_code, entropy = _FusedTokenGRPOFunction.apply(
            logits, ids, weights, adv, old, ref, pmask, spec, return_entropy, inplace_grad
        )
        codes = {METRIC_CLIP_LOW: clip_code == 1, METRIC_CLIP_HIGH: clip_code == 2,
                 METRIC_CLIP_REGION: clip_code != 0, METRIC_CISPO_CLIP: clip_code == 2}
        flags = {name: codes[name] for name in clip_metric_names(spec.loss_type)}
        metrics = clip_metrics(mask, flags, kl if ref is not None else None, "token")
        metrics[METRIC_LOGP] = logp
    if return_entropy:
        metrics[METRIC_ENTROPY] = entropy
    return loss, metrics
