"""Public GRPO functions and the one dispatch between the Triton kernels and the PyTorch references.

Dispatch: CUDA tensors go to the Triton kernels, everything else to the references
(``reference.py``). ``backend("triton")`` forces the kernels, which on CPU needs
``TRITON_INTERPRET=1`` (Triton's interpreter: slow, for tests); ``backend("reference")`` forces the
references on any device.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Iterator, Optional, Union

import torch

from . import reference
from .objective import LossSpec, check_token_ids, validate_grpo_args

BACKENDS = ("auto", "triton", "reference")
_backend = "auto"


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Within the block, dispatch to ``name``: "auto" (kernels on CUDA), "triton" or "reference"."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _use_triton(t: torch.Tensor) -> bool:
    if _backend == "reference":
        return False
    if _backend == "triton":
        if not _triton_available():
            raise RuntimeError("backend('triton') needs the triton package; install it or use backend('reference')")
        if not t.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                f"backend('triton') got a tensor on {t.device}: the kernels need CUDA, or TRITON_INTERPRET=1 "
                "set before triton is imported (the interpreter runs them on the CPU)"
            )
        return True
    return t.is_cuda and _triton_available()


def grpo_loss(
    logits: torch.Tensor,
    completion_ids: torch.Tensor,
    advantages: torch.Tensor,
    spec: Optional[LossSpec] = None,
    *,
    mask: Optional[torch.Tensor] = None,
    old_logp: Optional[torch.Tensor] = None,
    ref_logp: Optional[torch.Tensor] = None,
    num_items_in_batch: Union[int, float, torch.Tensor, None] = None,
    policy_mask: Optional[torch.Tensor] = None,
    return_entropy: bool = False,
    inplace_grad: bool = True,
    **hyper_parameters,
) -> "tuple[torch.Tensor, dict]":
    """GRPO loss straight from logits (DESIGN.md §4; TRL's GRPOTrainer formulas).

    The hyper-parameters are a :class:`LossSpec` (``spec``; ``LossSpec.from_config(cfg)`` for a
    training config) and/or its fields as keyword arguments (``beta=0.0, loss_type="dapo"``, …),
    which replace the spec's values; an unknown keyword is a TypeError.

    Shapes: ``logits`` (B, L, V) bf16/fp16/fp32, ``logits[b, t]`` predicts ``completion_ids[b, t]``
    (B, L); ``advantages`` (B,) or (B, 1); ``mask``, ``old_logp``, ``ref_logp``, ``policy_mask`` (B, L).
    Per token ``logp = log_softmax(logits / T)[id]`` (fp32 accumulation);
    ``log_w = logp - old_logp`` ("token") or its masked mean over the sequence ("sequence", GSPO),
    ``old_logp`` defaulting to ``logp.detach()``; ``r = exp(log_w)``; the policy term ``p``
    (``sg`` = no gradient):

    - grpo, bnpo, dr_grpo, dapo, luspo: ``-min(min(r, delta) * A, clip(r, 1 - eps_low, 1 + eps_high) * A)``;
    - cispo: ``-sg(min(r, eps_high)) * A * logp`` (``eps_high`` caps the ratio itself, e.g. 5.0);
    - sapo: ``-sigmoid(tau * (r - 1)) * 4 / tau * A``, ``tau = sapo_temperature_pos`` if A > 0 else
      ``sapo_temperature_neg``;
    - vespo: ``-sg(phi) * A * logp`` with ``phi = exp(lam + k log w - lam w)``, ``log w`` the
      sequence's summed log-ratio (clamped), ``k, lam`` = ``vespo_k_pos, vespo_lambda_pos`` if A >= 0
      else ``vespo_k_neg, vespo_lambda_neg``;

    ``l = p * policy_mask + beta * kl`` with ``kl = exp(ref - logp) - (ref - logp) - 1`` (``beta != 0``
    needs ``ref_logp``; with ``bias_correction_kl`` the KL is ``kl * r``, differentiated through
    ``r``, as TRL's ``use_bias_correction_kl``; ``policy_mask`` (default 1) drops tokens from the policy term only, as
    TRL's ``top_entropy_quantile`` does). Normalisation with ``m`` the mask: grpo, sapo
    ``mean_b(sum_t l m / max(sum_t m, 1))``; bnpo ``sum l m / max(sum m, 1)``; dr_grpo
    ``sum l m / (B * max_completion_length)`` (default L); dapo, cispo, vespo
    ``sum l m / max(num_items_in_batch, 1)`` (default ``sum m``); luspo ``mean_b(len_b * l_b)``
    (sequence level only, beta = 0 and no policy_mask: TRL's luspo otherwise averages over padding).

    Returns ``(loss, metrics)``, all detached: ``"kl"`` (masked mean KL, only when ``ref_logp`` is
    given); the clip fractions of the loss type (of tokens, or of sequences at sequence level):
    ``"clip_ratio/low_mean"``, ``"clip_ratio/high_mean"``, ``"clip_ratio/region_mean"`` (clipped
    types), ``"cispo_clip_ratio"`` (cispo: ``r > eps_high`` and A > 0), none for sapo;
    ``"vespo/phi_seq_mean"`` (vespo: the mean of phi over sequences); ``"logp"`` (B, L) fp32 (0
    where masked); with ``return_entropy``, ``"entropy"`` (B, L) fp32: the entropy of
    ``softmax(logits / T)`` at every unmasked position (0 where masked), from the same pass over
    the logits as the loss.

    ``inplace_grad=True`` lets the kernels write the gradient into the logits buffer (fused token
    level: during this call; sequence level and vespo: during backward): afterwards the logits hold
    garbage for any other use. Masked positions are never read, so their ids may be anything (e.g. -100).
    """
    spec = LossSpec.build(spec, **hyper_parameters)
    validate_grpo_args(logits, completion_ids, advantages, mask, old_logp, ref_logp, spec, policy_mask)
    B, L, _ = logits.shape
    mask_f = (
        torch.ones((B, L), dtype=torch.float32, device=logits.device)
        if mask is None
        else mask.to(device=logits.device, dtype=torch.float32)
    )
    pmask = None if policy_mask is None else policy_mask.to(device=logits.device, dtype=torch.float32)
    args = (logits, completion_ids, advantages, mask_f, old_logp, ref_logp, pmask, spec, num_items_in_batch,
            return_entropy)
    if _use_triton(logits):
        from .ops.grpo_loss import grpo_loss_triton

        return grpo_loss_triton(*args, inplace_grad)
    return reference.grpo_loss_reference(*args)


def selective_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log_softmax(logits / T, -1).gather(-1, ids)`` as fp32 (B, L), without gradient.

    For the old-policy and reference-model passes; logits (B, L, V), ids (B, L) in ``[0, V)``.
    """
    if logits.dim() != 3 or tuple(ids.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"need logits (B, L, V) and ids (B, L), got {tuple(logits.shape)} and {tuple(ids.shape)}")
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    check_token_ids(ids, torch.ones_like(ids, dtype=torch.bool), logits.shape[-1])
    with torch.no_grad():
        if _use_triton(logits):
            from .ops.grpo_loss import logprobs_triton

            return logprobs_triton(logits, ids, temperature)[0]
        return reference.selective_logprobs_reference(logits, ids, temperature).to(torch.float32)


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of ``softmax(logits / T)`` at every position, no gradient: (B, L) fp32 for logits
    (B, L, V) of any float dtype (fp64 for fp64 on the reference path). TRL's ``entropy`` metric is
    its masked mean over the completion tokens. One pass over the logits (Triton on CUDA, chunked
    PyTorch elsewhere); ``grpo_loss(..., return_entropy=True)`` gives the same from the loss's own
    pass. Call it before ``grpo_loss(..., inplace_grad=True)``, which overwrites the logits."""
    if logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(f"need float logits (B, L, V), got {logits.dtype} {tuple(logits.shape)}")
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.no_grad():
        if _use_triton(logits):
            from .ops.grpo_loss import logprobs_triton

            ids = torch.zeros(logits.shape[:2], dtype=torch.long, device=logits.device)
            return logprobs_triton(logits, ids, temperature, None, True)[2]
    entropy = reference.token_entropy_reference(logits.detach(), temperature)
    return entropy if entropy.dtype == torch.float64 else entropy.to(torch.float32)


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    weights: Optional[torch.Tensor] = None,
    scale: str = "group",
    eps: float = 1e-4,
) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """GRPO advantages from rewards of consecutive groups of ``group_size`` completions.

    ``rewards`` (N,) or (N, R) (one column per reward function, NaN = not applicable) with
    ``weights`` (R,) (default ones): ``R = nansum_f w_f r_f``. ``A = (R - mean_g) / (std_g + eps)``
    ("group"), ``(R - mean_g) / (std_batch + eps)`` ("batch") or ``R - mean_g`` ("none"); standard
    deviations with Bessel's correction. Returns ``(advantages (N,), group mean (N / G,),
    group std (N / G,))`` in fp32 (fp64 for fp64 rewards on the reference path).
    """
    if rewards.dim() not in (1, 2) or not rewards.is_floating_point():
        raise ValueError(f"rewards must be a float (N,) or (N, R) tensor, got {rewards.dtype} {tuple(rewards.shape)}")
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(
            f"group_size must be >= 2 and divide the number of rewards {rewards.shape[0]}, got {group_size}"
        )
    n_funcs = rewards.shape[1] if rewards.dim() == 2 else 1
    if weights is not None and tuple(weights.shape) != (n_funcs,):
        raise ValueError(f"weights must have one entry per reward function ({n_funcs},), got {tuple(weights.shape)}")
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    if _use_triton(rewards):
        from .ops.group_advantages import group_advantages_triton

        return group_advantages_triton(rewards, group_size, weights, scale, eps)
    return reference.group_advantages_reference(rewards, group_size, weights, scale, eps)
