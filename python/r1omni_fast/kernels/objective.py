"""The GRPO objective on per-token log-probabilities (DESIGN.md §4), in plain PyTorch.

Every backend shares this module: it validates the arguments, turns the mask into the per-token
normalisation weights, and evaluates the surrogate + KL objective on ``(B, L)`` log-probabilities
(the reference backend and the sequence-level Triton path differentiate through it with autograd;
the fused token-level kernel evaluates the same formulas in registers). Everything here is
``O(B * L)``; nothing touches the vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Union

import torch

#: TRL's GRPOTrainer loss types. The clipped surrogate ``-min(r A, clip(r) A)``: grpo, bnpo, dr_grpo,
#: dapo, luspo; cispo ``-min(r, eps_high).detach() A logp``; sapo ``-sigmoid(tau (r - 1)) 4 / tau A``;
#: vespo ``-phi(w_seq).detach() A logp``. They differ too in the normaliser (``token_weights``).
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
#: Loss types with the clipped surrogate (and TRL's ``clip_ratio/*`` metrics).
CLIPPED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")
#: Loss types normalised by ``num_items_in_batch`` (the tokens of the whole generation batch).
TOKEN_COUNT_LOSS_TYPES = ("dapo", "cispo", "vespo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")

#: TRL's metric names; ``logp`` holds the detached per-token log-probabilities.
METRIC_KL = "kl"
METRIC_CLIP_LOW = "clip_ratio/low_mean"
METRIC_CLIP_HIGH = "clip_ratio/high_mean"
METRIC_CLIP_REGION = "clip_ratio/region_mean"
METRIC_CISPO_CLIP = "cispo_clip_ratio"
METRIC_VESPO_PHI = "vespo/phi_seq_mean"
METRIC_LOGP = "logp"
#: Per-token entropy (B, L) of the sampling distribution, 0 where masked (``return_entropy``).
METRIC_ENTROPY = "entropy"


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """The hyper-parameters of one GRPO objective, the one place they are spelled out: ``grpo_loss``
    and ``GRPOLoss`` take these fields as keyword arguments, and :meth:`from_config` reads them from
    a training config (TRL's ``GRPOConfig`` names in brackets).

    ``loss_type`` (one of :data:`LOSS_TYPES`), ``importance_sampling_level`` ("token" or
    "sequence"), ``beta`` (the KL weight), ``eps_low`` [epsilon], ``eps_high`` [epsilon_high]
    (cispo: the cap of the ratio itself, TRL's epsilon_high, e.g. 5.0), ``delta`` (two-sided clip
    cap of the clipped surrogate, None = off), ``temperature`` (logits are divided by it),
    ``max_completion_length`` (dr_grpo's normaliser, None = the completion width),
    ``sapo_temperature_pos`` / ``_neg`` (the gate's slope for A > 0 / A <= 0), ``vespo_k_*`` /
    ``vespo_lambda_*`` (the Gamma weight's exponent and decay for A >= 0 / A < 0),
    ``bias_correction_kl`` [use_bias_correction_kl] (the k3 KL times the importance ratio ``r``,
    differentiated through ``r``: DeepSeek-V3.2's unbiased estimator off-policy). Numbers are
    stored as Python floats (``max_completion_length`` as an int); ranges are checked with the
    tensors (``validate_grpo_args``).
    """

    loss_type: str = "grpo"
    importance_sampling_level: str = "token"
    beta: float = 0.04
    eps_low: float = 0.2
    eps_high: float = 0.2
    delta: Optional[float] = None
    temperature: float = 1.0
    max_completion_length: Optional[int] = None
    sapo_temperature_pos: float = 1.0
    sapo_temperature_neg: float = 1.05
    vespo_k_pos: float = 2.0
    vespo_lambda_pos: float = 3.0
    vespo_k_neg: float = 3.0
    vespo_lambda_neg: float = 2.0
    bias_correction_kl: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("loss_type", "importance_sampling_level") or value is None:
                continue
            kind = {"max_completion_length": int, "bias_correction_kl": bool}.get(f.name, float)
            object.__setattr__(self, f.name, kind(value))

    @classmethod
    def build(cls, spec: "Optional[LossSpec]" = None, **fields) -> "LossSpec":
        """``spec`` (default: the defaults) with ``fields`` replacing its values; an unknown name is a
        TypeError naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TypeError(f"unknown GRPO loss argument(s) {unknown}: use the fields of LossSpec {sorted(known)}")
        return dataclasses.replace(spec, **fields) if spec is not None else cls(**fields)

    @classmethod
    def from_config(cls, cfg) -> "LossSpec":
        """The spec of a training config: any object with TRL's ``GRPOConfig`` field names
        (``r1omni_fast.config.GRPOConfig``, or TRL's own): ``loss_type``,
        ``importance_sampling_level``, ``beta``, ``epsilon``, ``epsilon_high`` (None = ``epsilon``),
        ``delta``, ``temperature``, ``max_completion_length``, ``sapo_temperature_pos`` / ``_neg``,
        ``vespo_k_pos``, ``vespo_lambda_pos``, ``vespo_k_neg``, ``vespo_lambda_neg``,
        ``use_bias_correction_kl``. The kernels import no config: this reads attributes only."""
        return cls(
            loss_type=cfg.loss_type, importance_sampling_level=cfg.importance_sampling_level, beta=cfg.beta,
            eps_low=cfg.epsilon, eps_high=cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high,
            delta=cfg.delta, temperature=cfg.temperature, max_completion_length=cfg.max_completion_length,
            sapo_temperature_pos=cfg.sapo_temperature_pos, sapo_temperature_neg=cfg.sapo_temperature_neg,
            vespo_k_pos=cfg.vespo_k_pos, vespo_lambda_pos=cfg.vespo_lambda_pos,
            vespo_k_neg=cfg.vespo_k_neg, vespo_lambda_neg=cfg.vespo_lambda_neg,
            bias_correction_kl=cfg.use_bias_correction_kl,
        )  # fmt: skip


def validate_grpo_args(
    logits: torch.Tensor,
    completion_ids: torch.Tensor,
    advantages: torch.Tensor,
    mask: Optional[torch.Tensor],
    old_logp: Optional[torch.Tensor],
    ref_logp: Optional[torch.Tensor],
    spec: LossSpec,
    policy_mask: Optional[torch.Tensor] = None,
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
    for name, t in (("mask", mask), ("old_logp", old_logp), ("ref_logp", ref_logp), ("policy_mask", policy_mask)):
        if t is not None and tuple(t.shape) != (B, L):
            raise ValueError(f"{name} must be (B, L) = {(B, L)}, got {tuple(t.shape)}")
    beta = spec.beta
    if beta != 0.0 and ref_logp is None:
        raise ValueError(f"beta = {beta} needs ref_logp (the reference model's log-probs); pass beta=0 without one")
    if not spec.temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {spec.temperature}")
    eps_low, eps_high = spec.eps_low, spec.eps_high
    if spec.loss_type == "cispo":
        if not eps_high > 0.0:
            raise ValueError(f"cispo caps the importance ratio at eps_high, which must be > 0, got {eps_high}")
    elif not (0.0 <= eps_low < 1.0) or not eps_high >= 0.0:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if spec.delta is not None and not spec.delta > 0.0:
        raise ValueError(f"delta caps the importance ratio and must be > 0 (usually > 1 + eps_high), got {spec.delta}")
    if spec.loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {spec.loss_type!r}")
    if spec.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(
            f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
            f"got {spec.importance_sampling_level!r}"
        )
    if spec.max_completion_length is not None and spec.max_completion_length < 1:
        raise ValueError(f"max_completion_length must be >= 1, got {spec.max_completion_length}")
    for name in ("sapo_temperature_pos", "sapo_temperature_neg"):
        if not getattr(spec, name) > 0.0:
            raise ValueError(f"{name} must be > 0 (the sapo gate divides by it), got {getattr(spec, name)}")
    if spec.loss_type == "luspo":
        # TRL's luspo multiplies each row's loss by its length and averages over every (row, position)
        # of the padded micro-batch: at token level, or with a KL term, padding positions enter it.
        if spec.importance_sampling_level != "sequence":
            raise ValueError("loss_type 'luspo' needs importance_sampling_level='sequence' (at token level TRL's "
                             "luspo averages over padding positions too)")
        if beta != 0.0:
            raise ValueError(f"loss_type 'luspo' needs beta = 0, got {beta} (TRL's luspo averages its KL term over "
                             "padding positions too)")
        if policy_mask is not None:
            raise ValueError("loss_type 'luspo' takes no policy_mask (TRL's luspo averages a per-token mask over "
                             "padding positions too)")


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
    grpo, sapo ``m / (B * max(sum_t m, 1))``; bnpo ``m / max(sum m, 1)``;
    dr_grpo ``m / (B * max_completion_length)`` (default ``L``);
    dapo, cispo, vespo ``m / max(num_items_in_batch, 1)`` (default ``sum m``);
    luspo ``m / B`` (at sequence level ``sum_t w l = len_b l_b / B``: TRL's ``mean_b(l_b len_b)``).
    """
    B, L = mask.shape
    if loss_type in ("grpo", "sapo"):
        return mask / (B * mask.sum(-1, keepdim=True).clamp(min=1.0))
    if loss_type == "bnpo":
        return mask / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return mask / (B * (max_completion_length if max_completion_length is not None else L))
    if loss_type in TOKEN_COUNT_LOSS_TYPES:
        if num_items_in_batch is None:
            items = mask.sum()
        else:
            items = torch.as_tensor(num_items_in_batch, dtype=mask.dtype, device=mask.device)
        return mask / items.clamp(min=1.0)
    if loss_type == "luspo":
        return mask / max(B, 1)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def clip_metrics(
    mask: torch.Tensor,
    flags: "dict[str, torch.Tensor]",
    kl: Optional[torch.Tensor],
    importance_sampling_level: str,
) -> dict:
    """TRL's logged metrics from per-token (or, at sequence level, per-sequence) flags.

    ``flags`` maps a metric name to a bool tensor; each becomes a masked mean over tokens (token
    level) or a plain mean over sequences (sequence level, as TRL does). ``kl`` = masked mean of
    the per-token k3 KL.
    """
    m_sum = mask.sum().clamp(min=1.0)
    metrics = {}
    for name, x in flags.items():
        if importance_sampling_level == "sequence":
            metrics[name] = x.to(mask.dtype).mean()
        else:
            metrics[name] = (x.to(mask.dtype) * mask).sum() / m_sum
    if kl is not None:
        metrics[METRIC_KL] = (kl * mask).sum() / m_sum
    return {k: v.detach() for k, v in metrics.items()}


def clip_flags(loss_type: str, ratio: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float) -> dict:
    """TRL's clip flags of a loss type: low ``r < 1 - eps_low and A < 0``, high ``r > 1 + eps_high
    and A > 0`` and their union (clipped surrogate); cispo ``r > eps_high and A > 0``; none for sapo
    and vespo. ``ratio`` (B, L) or (B, 1) (uncapped), ``adv`` (B, 1)."""
    if loss_type in CLIPPED_LOSS_TYPES:
        low = (ratio < 1.0 - eps_low) & (adv < 0)
        high = (ratio > 1.0 + eps_high) & (adv > 0)
        return {METRIC_CLIP_LOW: low, METRIC_CLIP_HIGH: high, METRIC_CLIP_REGION: low | high}
    if loss_type == "cispo":
        return {METRIC_CISPO_CLIP: (ratio > eps_high) & (adv > 0)}
    return {}


def clip_metric_names(loss_type: str) -> "tuple[str, ...]":
    """The clip metrics TRL logs for ``loss_type`` (the keys of :func:`clip_flags`)."""
    if loss_type in CLIPPED_LOSS_TYPES:
        return (METRIC_CLIP_LOW, METRIC_CLIP_HIGH, METRIC_CLIP_REGION)
    return (METRIC_CISPO_CLIP,) if loss_type == "cispo" else ()


def vespo_weights(log_ratio: torch.Tensor, mask: torch.Tensor, adv: torch.Tensor, spec: LossSpec) -> torch.Tensor:
    """VESPO's per-sequence Gamma weight ``phi(w) = exp(lam + k log w - lam w)`` (``phi(1) = 1``),
    without gradient: ``log w = clamp(sum_t m clamp(log_ratio, -20, 20), log 1e-8, 20)``; ``k``,
    ``lam`` (clamped >= 1e-4) those of A >= 0 or A < 0; a non-finite phi counts 0. (B, 1)."""
    with torch.no_grad():
        lower = math.log(1e-8)
        seq = (log_ratio.clamp(-20.0, 20.0) * mask).sum(-1, keepdim=True)
        log_w = seq.clamp(lower, 20.0)
        nonneg = adv >= 0
        k = torch.where(nonneg, spec.vespo_k_pos, spec.vespo_k_neg).to(log_w.dtype)
        lam = torch.where(nonneg, spec.vespo_lambda_pos, spec.vespo_lambda_neg).to(log_w.dtype).clamp(min=1e-4)
        phi = torch.exp(lam + k * log_w - lam * torch.exp(log_w))
        return phi.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def grpo_objective(
    logp: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    advantages: torch.Tensor,
    old_logp: Optional[torch.Tensor],
    ref_logp: Optional[torch.Tensor],
    spec: LossSpec,
    policy_mask: Optional[torch.Tensor] = None,
) -> "tuple[torch.Tensor, dict]":
    """GRPO loss from ``(B, L)`` log-probabilities (differentiable in ``logp``) and its metrics.

    ``log_w = logp - old_logp`` (token) or its masked mean ``sum_t m (logp - old) / max(sum_t m, 1)``
    (sequence); ``r = exp(log_w)``; the policy term ``p`` per loss type (``sg`` = no gradient):

    - clipped (grpo, bnpo, dr_grpo, dapo, luspo): ``-min(min(r, delta) A, clip(r, 1 - eps_low, 1 + eps_high) A)``;
    - cispo: ``-sg(min(r, eps_high)) A logp``;
    - sapo: ``-sigmoid(tau (r - 1)) 4 / tau A``, ``tau`` = sapo_temperature_pos if A > 0 else _neg;
    - vespo: ``-sg(phi) A logp`` (:func:`vespo_weights`);

    ``l = p * policy_mask + beta * kl``, ``kl = exp(ref - logp) - (ref - logp) - 1`` (times ``r`` with
    ``bias_correction_kl``); loss ``= sum w * l``.
    ``old_logp`` defaults to ``logp.detach()``. Clip flags (:func:`clip_flags`) use the uncapped ``r``.
    """
    # Masked positions may hold garbage log-probs (padding ids, -100): pin them to 0 so that
    # exp(ref - logp) cannot overflow into an inf * 0 = NaN gradient.
    active = mask != 0
    logp = torch.where(active, logp, 0.0)
    adv = advantages.reshape(-1, 1).to(logp.dtype)
    old = logp.detach() if old_logp is None else torch.where(active, old_logp.to(logp.dtype), 0.0)
    log_ratio = logp - old
    level = spec.importance_sampling_level
    if level == "sequence":
        log_w = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
    else:
        log_w = log_ratio
    ratio = torch.exp(log_w)
    extra = {}
    if spec.loss_type == "cispo":
        policy = -torch.clamp(ratio, max=spec.eps_high).detach() * adv * logp
    elif spec.loss_type == "sapo":
        tau = torch.where(adv > 0, spec.sapo_temperature_pos, spec.sapo_temperature_neg).to(logp.dtype)
        policy = -torch.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau * adv
    elif spec.loss_type == "vespo":
        phi = vespo_weights(log_ratio, mask.to(logp.dtype), adv, spec)
        policy = -phi * adv * logp
        extra[METRIC_VESPO_PHI] = phi.mean().detach()
    else:
        clipped = torch.clamp(ratio, 1.0 - spec.eps_low, 1.0 + spec.eps_high)
        capped = torch.clamp(ratio, max=spec.delta) if spec.delta is not None else ratio
        policy = -torch.min(capped * adv, clipped * adv)
    if policy_mask is not None:
        policy = policy * policy_mask.to(logp.dtype)
    per_token = policy
    kl = None
    if ref_logp is not None:
        ref_minus = torch.where(active, ref_logp.to(logp.dtype), 0.0) - logp
        kl = torch.exp(ref_minus) - ref_minus - 1.0
        if spec.bias_correction_kl:
            kl = kl * ratio
        if spec.beta != 0.0:
            per_token = per_token + spec.beta * kl
    loss = (per_token * weights.to(logp.dtype)).sum()
    flags = clip_flags(spec.loss_type, ratio, adv, spec.eps_low, spec.eps_high)
    if level == "sequence":  # one flag per sequence, (B, 1) -> (B,)
        flags = {k: v.reshape(-1) for k, v in flags.items()}
    metrics = clip_metrics(mask.to(logp.dtype), flags, kl, level)
    metrics.update(extra)
    return loss, metrics
