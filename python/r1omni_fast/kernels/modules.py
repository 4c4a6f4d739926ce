"""``torch.nn.Module`` wrapper of ``grpo_loss`` holding the trainer's fixed hyper-parameters."""

from __future__ import annotations

from typing import Optional

import torch

from .functional import grpo_loss
from .objective import IMPORTANCE_SAMPLING_LEVELS, LOSS_TYPES, LossSpec


class GRPOLoss(torch.nn.Module):
    """``GRPOLoss(spec)`` or ``GRPOLoss(beta=..., ...)`` (the fields of :class:`LossSpec`), then
    ``loss(logits, completion_ids, advantages, mask=..., old_logp=..., ref_logp=...)``: ``grpo_loss``
    with the hyper-parameters fixed at construction; returns ``(loss, metrics)``. ``inplace_grad``
    as in ``grpo_loss``."""

    def __init__(self, spec: Optional[LossSpec] = None, *, inplace_grad: bool = True, **hyper_parameters) -> None:
        super().__init__()
        self.spec = LossSpec.build(spec, **hyper_parameters)
        if self.spec.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.spec.loss_type!r}")
        if self.spec.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            raise ValueError(
                f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
                f"got {self.spec.importance_sampling_level!r}"
            )
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
            logits, completion_ids, advantages, self.spec, mask=mask, old_logp=old_logp, ref_logp=ref_logp,
            num_items_in_batch=num_items_in_batch, policy_mask=policy_mask, return_entropy=return_entropy,
            inplace_grad=self.inplace_grad,
        )  # fmt: skip

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"loss_type={s.loss_type!r}, importance_sampling_level={s.importance_sampling_level!r}, "
            f"beta={s.beta}, eps=({s.eps_low}, {s.eps_high}), delta={s.delta}, T={s.temperature}"
        )
