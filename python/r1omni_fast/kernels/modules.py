"""``torch.nn.Module`` wrapper of ``grpo_loss`` holding the trainer's fixed hyper-parameters."""

from __future__ import annotations

from typing import Optional

import torch

from .functional import grpo_loss
from .objective import IMPORTANCE_SAMPLING_LEVELS, LOSS_TYPES


class GRPOLoss(torch.nn.Module):
    """``GRPOLoss(beta=..., ...)(logits, completion_ids, advantages, mask=..., old_logp=..., ref_logp=...)``
    is ``grpo_loss`` with the hyper-parameters fixed at construction; returns ``(loss, metrics)``."""

    def __init__(
        self,
        *,
        beta: float = 0.04,
        eps_low: float = 0.2,
        eps_high: float = 0.2,
        delta: Optional[float] = None,
        temperature: float = 1.0,
        loss_type: str = "grpo",
        importance_sampling_level: str = "token",
        max_completion_length: Optional[int] = None,
        sapo_temperature_pos: float = 1.0,
        sapo_temperature_neg: float = 1.05,
        vespo_k_pos: float = 2.0,
        vespo_lambda_pos: float = 3.0,
        vespo_k_neg: float = 3.0,
        vespo_lambda_neg: float = 2.0,
        bias_correction_kl: bool = False,
        inplace_grad: bool = True,
    ) -> None:
        super().__init__()
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            raise ValueError(
                f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
                f"got {importance_sampling_level!r}"
            )
        self.beta = beta
        self.eps_low = eps_low
        self.eps_high = eps_high
        self.delta = delta
        self.temperature = temperature
        self.loss_type = loss_type
        self.importance_sampling_level = importance_sampling_level
        self.max_completion_length = max_completion_length
        self.sapo_temperature_pos = sapo_temperature_pos
        self.sapo_temperature_neg = sapo_temperature_neg
        self.vespo_k_pos = vespo_k_pos
        self.vespo_lambda_pos = vespo_lambda_pos
        self.vespo_k_neg = vespo_k_neg
        self.vespo_lambda_neg = vespo_lambda_neg
        self.bias_correction_kl = bias_correction_kl
        self.inplace_grad = inplace_grad

    def forward(
        self,
        logits: torch.Tensor,
        completion_ids: torch.Tensor,
        advantages: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        old_logp: Optional[torch.Tensor] = None,
        ref_logp: Optional[torch.Tensor] = None,
        num_items_in_batch=None,
        policy_mask: Optional[torch.Tensor] = None,
        return_entropy: bool = False,
    ) -> "tuple[torch.Tensor, dict]":
        return grpo_loss(
            logits, completion_ids, advantages, mask=mask, old_logp=old_logp, ref_logp=ref_logp,
            beta=self.beta, eps_low=self.eps_low, eps_high=self.eps_high, delta=self.delta,
            temperature=self.temperature, loss_type=self.loss_type,
            importance_sampling_level=self.importance_sampling_level,
            max_completion_length=self.max_completion_length, num_items_in_batch=num_items_in_batch,
            sapo_temperature_pos=self.sapo_temperature_pos, sapo_temperature_neg=self.sapo_temperature_neg,
            vespo_k_pos=self.vespo_k_pos, vespo_lambda_pos=self.vespo_lambda_pos, vespo_k_neg=self.vespo_k_neg,
            vespo_lambda_neg=self.vespo_lambda_neg, bias_correction_kl=self.bias_correction_kl,
            policy_mask=policy_mask, return_entropy=return_entropy,
            inplace_grad=self.inplace_grad,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"loss_type={self.loss_type!r}, importance_sampling_level={self.importance_sampling_level!r}, "
            f"beta={self.beta}, eps=({self.eps_low}, {self.eps_high}), delta={self.delta}, T={self.temperature}"
        )
