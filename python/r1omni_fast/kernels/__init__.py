"""GRPO loss-head kernels (Triton) with their PyTorch references (DESIGN.md §4).

- ``grpo_loss``: fused selective log-softmax + clipped surrogate + k3 KL from logits, forward and
  backward, gradient written into the logits buffer when allowed.
- ``selective_logprobs``: per-token log-probs without gradient (old-policy / reference passes).
- ``group_advantages``: reward weighting, group statistics and normalisation in one launch.
- ``token_entropy``: per-position entropy of the sampling distribution (a chunked PyTorch pass).

CUDA tensors run the Triton kernels, others the PyTorch references; ``backend(...)`` overrides.
Importing this package needs only torch (triton is imported when a kernel first runs).
"""

from __future__ import annotations

from .functional import BACKENDS, backend, grpo_loss, group_advantages, selective_logprobs, token_entropy
from .modules import GRPOLoss

__all__ = ["BACKENDS", "GRPOLoss", "backend", "grpo_loss", "group_advantages", "selective_logprobs",
           "token_entropy"]
