"""group_advantages: the Triton kernel (interpreter on CPU) and the reference against an fp64
oracle written from TRL's formulas (fp32 results: rtol 1e-5)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r1omni_fast.kernels import backend, group_advantages

BACKENDS = ["triton", "reference"]


def oracle(rewards, group_size, weights, scale, eps):
    r = rewards.double()
    if r.dim() == 2:
        w = torch.ones(r.shape[1], dtype=torch.float64) if weights is None else weights.double()
        r = torch.nansum(r * w.unsqueeze(0), dim=1)
    mean = r.view(-1, group_size).mean(dim=1)
    std = r.view(-1, group_size).std(dim=1)
    centred = r - mean.repeat_interleave(group_size)
    if scale == "group":
        adv = centred / (std.repeat_interleave(group_size) + eps)
    elif scale == "batch":
        adv = centred / (r.std() + eps)
    else:
        adv = centred
    return adv, mean, std


def assert_close(got, want):
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        assert torch.allclose(g.double(), w, rtol=1e-5, atol=1e-5), (g, w)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("group_size", [2, 5, 8])
def test_matches_oracle(backend_name, scale, group_size):
    g = torch.Generator().manual_seed(group_size)
    n = group_size * 37  # more groups than one block of the kernel
    accuracy = torch.randint(0, 2, (n,), generator=g).float()
    fmt = torch.rand(n, generator=g)
    fmt[::7] = float("nan")  # a reward function that does not apply to some completions
    rewards = torch.stack([accuracy, fmt], dim=1)
    weights = torch.tensor([1.0, 0.5])
    with backend(backend_name):
        got = group_advantages(rewards, group_size, weights=weights, scale=scale)
        got_1d = group_advantages(accuracy, group_size, scale=scale, eps=1e-3)
    assert_close(got, oracle(rewards, group_size, weights, scale, 1e-4))
    assert_close(got_1d, oracle(accuracy, group_size, None, scale, 1e-3))


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_zero_variance_groups_get_exactly_zero(backend_name, scale):
    # In fp32, (0.9 + 0.9 + 0.9) / 3 != 0.9: a plain mean would leave advantages of ~6e-8 / eps.
    rewards = torch.tensor([0.9, 0.9, 0.9, 0.7, 0.7, 0.7, 0.3, 0.9, 0.2])
    with backend(backend_name):
        adv, mean, std = group_advantages(rewards, 3, scale=scale)
    assert (adv[:6] == 0).all() and (std[:2] == 0).all()
    assert (adv[6:] != 0).all()
    assert mean[0] == torch.tensor(0.9) and mean[1] == torch.tensor(0.7)


@settings(max_examples=10)
@given(
    group_size=st.integers(2, 9),
    n_groups=st.integers(1, 40),
    n_funcs=st.integers(1, 3),
    scale=st.sampled_from(["group", "batch", "none"]),
    seed=st.integers(0, 2**16),
)
def test_shapes_property(group_size, n_groups, n_funcs, scale, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(group_size * n_groups, n_funcs, generator=g)
    weights = torch.rand(n_funcs, generator=g)
    with backend("triton"):
        got = group_advantages(rewards, group_size, weights=weights, scale=scale)
    assert_close(got, oracle(rewards, group_size, weights, scale, 1e-4))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(6), 1)
    with pytest.raises(ValueError, match="weights"):
        group_advantages(torch.zeros(6, 2), 3, weights=torch.ones(3))
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(6), 3, scale="global")
    with pytest.raises(ValueError, match="rewards"):
        group_advantages(torch.zeros(6, dtype=torch.long), 3)


@pytest.mark.gpu
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_gpu_matches_oracle(scale):
    rewards = torch.randn(4096, 2)
    weights = torch.tensor([1.0, 0.3])
    got = group_advantages(rewards.cuda(), 16, weights=weights.cuda(), scale=scale)
    assert_close([t.cpu() for t in got], oracle(rewards, 16, weights, scale, 1e-4))
