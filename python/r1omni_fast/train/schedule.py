"""Learning-rate schedules with linear warm-up (the ``lr_scheduler_type`` config field)."""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")


def lr_lambda(kind: str, warmup_steps: int, total_steps: int):
    """Multiplier of the base learning rate at optimizer step ``s`` (0-based).

    warm-up: ``s / warmup_steps`` for ``s < warmup_steps`` (as transformers' schedulers); then cosine: ``0.5 (1 + cos(pi p))``, linear: ``1 - p``,
    constant: 1, with ``p = (s - warmup) / max(1, total - warmup)``.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"lr_scheduler_type must be one of {SCHEDULES}, got {kind!r}")
    if kind == "constant":
        return lambda s: 1.0

    def f(s: int) -> float:
        if s < warmup_steps:
            return s / max(1, warmup_steps)
        if kind == "constant_with_warmup":
            return 1.0
        p = min(1.0, (s - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * p)) if kind == "cosine" else 1.0 - p

    return f


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup_ratio: float,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over ``total_steps`` optimizer steps with ``ceil(warmup_ratio * total)`` warm-up."""
    warmup = math.ceil(warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(kind, warmup, total_steps))
