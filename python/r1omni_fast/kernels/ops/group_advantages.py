"""Triton kernel for GRPO group advantages: reward weighting, group statistics and normalisation
in one launch (one program; the batch is small, O(N * R))."""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

SCALES = ("group", "batch", "none")

#: Groups handled per loop step of the single program.
BLOCK_GROUPS = 32


@triton.jit
def _weighted_reward(rewards_ptr, weights_ptr, n, valid, n_funcs, stride_n, stride_f):
    """``R[n] = nansum_f w_f * rewards[n, f]`` (a NaN reward means the function does not apply)."""
    total = tl.zeros(n.shape, dtype=tl.float32)
    for f in range(0, n_funcs):
        r = tl.load(rewards_ptr + n * stride_n + f * stride_f, mask=valid, other=0.0).to(tl.float32)
        w = tl.load(weights_ptr + f).to(tl.float32)
        total += tl.where(r == r, w * r, 0.0)
    return total


@triton.jit
def _group_advantages_kernel(
    rewards_ptr, weights_ptr, adv_ptr, mean_ptr, std_ptr,
    n_groups, group_size, n_funcs, stride_n, stride_f, eps,
    SCALE: tl.constexpr, BLOCK_GROUPS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """``A = (R - mean_g) / (std_g + eps)`` (SCALE 0), ``/ (std_batch + eps)`` (1) or ``R - mean_g`` (2).

    ``mean_g = R_0 + sum_i (R_i - R_0) / G`` (exactly R_0 for a constant group, so A = 0 exactly);
    Bessel's correction for both standard deviations.
    """
    n_total = n_groups * group_size
    batch_std = 1.0
    if SCALE == 1:
        offs = tl.arange(0, BLOCK_N)
        acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for start in range(0, n_total, BLOCK_N):
            n = start + offs
            acc += _weighted_reward(rewards_ptr, weights_ptr, n, n < n_total, n_funcs, stride_n, stride_f)
        batch_mean = tl.sum(acc, 0) / n_total
        acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for start in range(0, n_total, BLOCK_N):
            n = start + offs
            valid = n < n_total
            dev = _weighted_reward(rewards_ptr, weights_ptr, n, valid, n_funcs, stride_n, stride_f) - batch_mean
            acc += tl.where(valid, dev * dev, 0.0)
        batch_std = tl.sqrt(tl.sum(acc, 0) / (n_total - 1))
    member = tl.arange(0, BLOCK_G)[None, :]
    for g_start in range(0, n_groups, BLOCK_GROUPS):
        group = g_start + tl.arange(0, BLOCK_GROUPS)[:, None]
        valid = (group < n_groups) & (member < group_size)
        n = group * group_size + member
        reward = _weighted_reward(rewards_ptr, weights_ptr, n, valid, n_funcs, stride_n, stride_f)
        first = tl.sum(tl.where(member == 0, reward, 0.0), 1)
        shifted = tl.where(valid, reward - first[:, None], 0.0)
        mean = first + tl.sum(shifted, 1) / group_size
        dev = tl.where(valid, reward - mean[:, None], 0.0)
        std = tl.sqrt(tl.sum(dev * dev, 1) / (group_size - 1))
        if SCALE == 0:
            adv = dev / (std[:, None] + eps)
        elif SCALE == 1:
            adv = dev / (batch_std + eps)
        else:
            adv = dev
        tl.store(adv_ptr + n, adv, mask=valid)
        group_valid = tl.sum(tl.where(valid, 1, 0), 1) > 0
        tl.store(mean_ptr + group.reshape([BLOCK_GROUPS]), mean, mask=group_valid)
        tl.store(std_ptr + group.reshape([BLOCK_GROUPS]), std, mask=group_valid)


def group_advantages_triton(
    rewards: torch.Tensor, group_size: int, weights: Optional[torch.Tensor], scale: str, eps: float
) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """See ``r1omni_fast.kernels.group_advantages``; inputs already validated."""
    matrix = rewards if rewards.dim() == 2 else rewards.unsqueeze(1)
    n_total, n_funcs = matrix.shape
    n_groups = n_total // group_size
    if weights is None:
        weights = torch.ones(n_funcs, dtype=torch.float32, device=rewards.device)
    weights = weights.to(torch.float32).contiguous()
    adv = torch.empty(n_total, dtype=torch.float32, device=rewards.device)
    mean = torch.empty(n_groups, dtype=torch.float32, device=rewards.device)
    std = torch.empty_like(mean)
    _group_advantages_kernel[(1,)](
        matrix, weights, adv, mean, std,
        n_groups, group_size, n_funcs, matrix.stride(0), matrix.stride(1), float(eps),
        SCALE=SCALES.index(scale), BLOCK_GROUPS=BLOCK_GROUPS, BLOCK_G=triton.next_power_of_2(group_size),
        BLOCK_N=1024, enable_fp_fusion=True,
    )  # fmt: skip
    return adv, mean, std
