"""The MoE router terms of a training step (SFT and GRPO alike): ``router_aux_loss_coef`` times
the load-balancing loss added to each micro-batch's loss (transformers adds it inside the model's
loss only when labels are given; here it is explicit, for GRPO too), and the step's metrics
``aux_loss`` (the loss, mean over micro-batches and ranks) and ``expert_load_imbalance``
(`r1omni_fast.model.routing.RouterRecord.expert_load`). Dense models log neither.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from r1omni_fast.config import AnyConfig, ConfigError


class RouterTerms:
    """Per run: ``add(loss, record, counted)`` after each micro-batch's forward (inside
    ``policy.routing()``, closed before the backward), ``metrics(dist)`` once per step.
    Raises `ConfigError` when ``router_aux_loss_coef`` > 0 and the model has no MoE router."""

    def __init__(self, model: Any, cfg: AnyConfig) -> None:
        with model.routing() as record:
            self.active = record.active
        self.coef = float(cfg.router_aux_loss_coef)
        if self.coef and not self.active:
            raise ConfigError(f"router_aux_loss_coef={self.coef}: {type(model).__name__} has no MoE router "
                              "(only MoE models such as Qwen3-Omni's thinker have a load-balancing loss): set it to 0")
        self._sums = [0.0, 0.0, 0.0]  # aux_loss, expert_load_imbalance, counted micro-batches

    def add(self, loss: torch.Tensor, record: Any, counted: bool = True) -> torch.Tensor:
        """``loss + coef * aux_loss`` (``loss`` unchanged when the coefficient is 0 or there are no
        routers); the micro-batch enters the step's metrics when ``counted`` (not a ghost shard)."""
        aux = record.aux_loss() if self.active else None
        if aux is None:
            return loss
        if counted:
            self._sums[0] += float(aux.detach())
            self._sums[1] += record.expert_load()["expert_load_imbalance"]
            self._sums[2] += 1.0
        return loss + self.coef * aux.to(loss.dtype) if self.coef else loss

    def metrics(self, dist: Any) -> Dict[str, float]:
        """The step's ``aux_loss`` and ``expert_load_imbalance`` (means over every rank's counted
        micro-batches), then reset; empty for a dense model."""
        if not self.active:
            return {}
        sums = dist.sum(self._sums) if dist.enabled else self._sums
        self._sums = [0.0, 0.0, 0.0]
        n = max(sums[2], 1.0)
        return {"aux_loss": sums[0] / n, "expert_load_imbalance": sums[1] / n}
