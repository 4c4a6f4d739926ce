"""GRPO advantages with unscorable completions (``step_advantages``'s NaN rows) against a
per-group loop written from TRL's rule: a completion no reward function scored leaves its
group's mean and std (and the batch std) and gets advantage 0."""

import math
import statistics

import pytest
import torch

from r1omni_fast.train.grpo.advantages import step_advantages

EPS = 1e-4


def loop_reference(rewards: torch.Tensor, group_size: int, weights, scale: str):
    """Advantages, group means and stds in Python floats, one group at a time."""
    rows = rewards.tolist()
    totals = [None if all(math.isnan(v) for v in row) else math.fsum(w * v for w, v in zip(weights, row)
                                                                      if not math.isnan(v)) for row in rows]
    scored_all = [t for t in totals if t is not None]
    batch_std = statistics.stdev(scored_all) if len(scored_all) > 1 else 0.0
    adv, means, stds = [], [], []
    for g in range(0, len(rows), group_size):
        group = totals[g:g + group_size]
        scored = [t for t in group if t is not None]
        mean = statistics.fmean(scored) if scored else 0.0
        std = statistics.stdev(scored) if len(scored) > 1 else 0.0
        means.append(mean)
        stds.append(std)
        for t in group:
            if t is None or len(scored) < 2:
                adv.append(0.0)
            elif scale == "group":
                adv.append((t - mean) / (std + EPS))
            elif scale == "batch":
                adv.append((t - mean) / (batch_std + EPS))
            else:
                adv.append(t - mean)
    return adv, means, stds


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("values", ["binary", "tenths", "normal"])
def test_unscorable_rows_leave_their_group_as_the_loop_reference(scale, values):
    g = torch.Generator().manual_seed(7)
    checked = 0
    for _ in range(200):
        G, B, F = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((2, 7), (1, 5), (1, 4)))
        if values == "binary":
            r = torch.randint(0, 2, (B * G, F), generator=g).double()
        elif values == "tenths":
            r = torch.randint(0, 11, (B * G, F), generator=g).double() / 10
        else:
            r = torch.randn(B * G, F, generator=g, dtype=torch.float64) * 3
        r[torch.rand(B * G, F, generator=g) < 0.3] = float("nan")
        r[0] = float("nan")  # at least one row no function scored: the branch under test
        weights = (torch.rand(F, generator=g) * 2).tolist()
        adv, mean, std = step_advantages(r, G, weights, scale, torch.device("cpu"))
        assert adv.dtype == mean.dtype == std.dtype == torch.float32
        want_adv, want_mean, want_std = loop_reference(r, G, weights, scale)
        torch.testing.assert_close(adv.double(), torch.tensor(want_adv, dtype=torch.float64), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mean.double(), torch.tensor(want_mean, dtype=torch.float64), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(std.double(), torch.tensor(want_std, dtype=torch.float64), rtol=1e-6, atol=1e-6)
        assert adv[0] == 0.0
        checked += 1
    assert checked == 200


def test_a_group_of_equal_scored_rewards_gets_exactly_zero_beside_an_unscorable_row():
    """The kernel's mean (``R_0 + sum(R_i - R_0) / G``) makes equal rewards deviate by exactly 0,
    with or without an unscorable row elsewhere in the group."""
    nan = float("nan")
    r = torch.tensor([[0.1], [0.1], [0.1], [nan], [0.7], [0.1], [0.7], [0.4]], dtype=torch.float64)
    for scale in ("group", "batch", "none"):
        adv, _, std = step_advantages(r, 4, [1.0], scale, torch.device("cpu"))
        assert adv[:4].tolist() == [0.0] * 4 and std[0] == 0.0
        assert bool((adv[4:] != 0).any())
