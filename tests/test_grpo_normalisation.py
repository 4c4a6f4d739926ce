"""The GRPO step's loss normalisation under gradient accumulation and several ranks, against an
fp64 oracle written from TRL's GRPOTrainer formulas (``_compute_loss``): one process computing
TRL's loss on the whole generation batch of a step (every micro-batch, every rank).

The model is a shared parameter ``W``: ``logits[b, t] = feats[b, t] @ W``, so that the ranks'
gradients are averaged over one set of weights, as DDP does."""

from __future__ import annotations

import math
import socket
from types import SimpleNamespace

import pytest
import torch

from r1omni_fast.config import GRPOConfig
from r1omni_fast.train.distributed import Dist
from r1omni_fast.train.grpo.loss import accumulation_divisor, micro_batch_loss
from r1omni_fast.train.grpo.advantages import normalise_step

LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"]
G, L, V, D = 2, 6, 9, 4
BETA, EPS, TEMPERATURE = 0.04, 0.2, 0.9
CISPO_CAP = 1.1  # TRL's epsilon_high for cispo: the cap of the ratio itself
SAPO_POS, SAPO_NEG = 1.0, 1.05  # TRL's defaults
VESPO = (2.0, 3.0, 3.0, 2.0)  # TRL's defaults: k_pos, lambda_pos, k_neg, lambda_neg


def setting(loss_type: str) -> tuple:
    """(importance_sampling_level, beta): luspo is defined at sequence level without KL."""
    return ("sequence", 0.0) if loss_type == "luspo" else ("token", BETA)


def micro_batch(seed: int, prompts: int) -> dict:
    """One micro-batch of ``prompts * G`` completions with unequal lengths and a fully masked row."""
    g = torch.Generator().manual_seed(seed)
    n = prompts * G
    lengths = torch.randint(1, L + 1, (n,), generator=g)
    lengths[seed % n] = 0  # a fully masked row
    rewards = torch.randint(0, 3, (n, 1), generator=g).double()
    feats = torch.randn(n, L, D, generator=g, dtype=torch.float64)
    ids = torch.randint(0, V, (n, L), generator=g)
    logp0 = torch.log_softmax(feats @ weights() / TEMPERATURE, -1).gather(-1, ids[..., None])[..., 0]
    return {"feats": feats, "ids": ids,
            "mask": torch.arange(L)[None] < lengths[:, None],
            "ref": torch.randn(n, L, generator=g, dtype=torch.float64) - 2.0,
            # the sampling policy's log-probs (num_iterations > 1): ratios spread across the clip range
            "old": logp0 + 0.3 * torch.randn(n, L, generator=g, dtype=torch.float64),
            "rewards": rewards}


def group_adv(rewards: torch.Tensor, std: torch.Tensor = None) -> torch.Tensor:
    """TRL's advantages: group mean baseline, divided by the group's (or the given) std + 1e-4."""
    grouped = rewards.view(-1, G)
    mean = grouped.mean(1).repeat_interleave(G)
    if std is None:
        std = grouped.std(1).repeat_interleave(G)
    return (rewards - mean) / (std + 1e-4)


def trl_per_token_loss(w: torch.Tensor, mb: dict, adv: torch.Tensor, loss_type: str, on_policy: bool,
                       level: str, beta: float) -> torch.Tensor:
    """TRL's ``_compute_loss`` up to the normalisation: the importance ratio ``coef_1`` (on-policy
    ``exp(logp - logp.detach())``), the loss type's policy term, the k3 KL times beta."""
    logits = (mb["feats"] @ w) / TEMPERATURE
    logp = torch.log_softmax(logits, -1).gather(-1, mb["ids"][..., None]).squeeze(-1)
    m = mb["mask"].double()
    old = logp.detach() if on_policy else mb["old"]
    log_ratio = logp - old
    if level == "sequence":
        log_ratio_w = ((log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    else:
        log_ratio_w = log_ratio
    coef1 = torch.exp(log_ratio_w)
    a = adv[:, None]
    if loss_type == "cispo":
        per_token = -torch.clamp(coef1, max=CISPO_CAP).detach() * a * logp
    elif loss_type == "sapo":
        tau = torch.where(a > 0, SAPO_POS, SAPO_NEG)
        per_token = -torch.sigmoid(tau * (coef1 - 1)) * 4 / tau * a
    elif loss_type == "vespo":
        k_pos, lam_pos, k_neg, lam_neg = VESPO
        with torch.no_grad():
            seq = torch.clamp(torch.sum(torch.clamp(log_ratio, -20.0, 20.0) * m, -1, keepdim=True),
                              math.log(1e-8), 20.0)
            k = torch.where(a >= 0, k_pos, k_neg)
            lam = torch.where(a >= 0, lam_pos, lam_neg).clamp(min=1e-4)
            phi = torch.exp(lam + k * seq - lam * torch.exp(seq)).nan_to_num(0.0, 0.0, 0.0)
        per_token = -phi * a * logp
    else:
        coef2 = coef1.clamp(1 - EPS, 1 + EPS)
        per_token = -torch.min(coef1 * a, coef2 * a)
    if "off_policy_threshold" in mb:  # TRL's get_off_policy_mask: sampling log-probs = old log-probs
        sampling = logp.detach() if on_policy else mb["old"]
        kl_div = sampling - logp.detach()
        avg_seq_kl = (kl_div * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)
        per_token = per_token * ((a >= 0) | (avg_seq_kl <= mb["off_policy_threshold"])).to(m.dtype)
    if "entropy_mask" in mb:  # top_entropy_quantile: the policy term only
        per_token = per_token * mb["entropy_mask"]
    if beta != 0.0:
        kl = torch.exp(mb["ref"] - logp) - (mb["ref"] - logp) - 1
        per_token = per_token + beta * kl
    return per_token


def trl_micro_loss(per_token: torch.Tensor, m: torch.Tensor, loss_type: str, accumulation: int,
                   num_items: float, processes: int) -> torch.Tensor:
    """TRL's ``_compute_loss`` normalisation of one micro-batch in training mode."""
    m = m.double()
    if loss_type in ("grpo", "sapo"):
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean() / accumulation
    if loss_type == "bnpo":
        return (per_token * m).sum() / m.sum().clamp(min=1.0) / accumulation
    if loss_type == "dr_grpo":
        return (per_token * m).sum() / (per_token.size(0) * L) / accumulation
    if loss_type == "luspo":
        return (per_token * m.sum(1, keepdim=True)).mean() / accumulation
    return (per_token * m).sum() / (max(num_items, 1.0) / processes)  # dapo, cispo, vespo


def trl_entropy(w: torch.Tensor, mb: dict) -> torch.Tensor:
    """TRL's ``entropy_from_logits`` of the temperature-scaled logits: ``-sum p log p``."""
    with torch.no_grad():
        logp = torch.log_softmax((mb["feats"] @ w) / TEMPERATURE, -1)
        return -(logp.exp() * logp).sum(-1)


def trl_entropy_masks(w: torch.Tensor, ranks: list, quantile: float) -> list:
    """TRL's ``get_high_entropy_mask`` for every rank's micro-batch i: the threshold is the
    ``1 - quantile`` quantile of the completion tokens' entropies of micro-batch i on every rank
    (gathered, in float32)."""
    out = [[None] * len(rank) for rank in ranks]
    for i in range(len(ranks[0])):
        entropies = [trl_entropy(w, rank[i]) for rank in ranks]
        gathered = torch.cat([h[rank[i]["mask"]] for h, rank in zip(entropies, ranks)]).float()
        threshold = torch.quantile(gathered, 1 - quantile)
        for r, (h, rank) in enumerate(zip(entropies, ranks)):
            out[r][i] = ((h * rank[i]["mask"].float()) >= threshold) & rank[i]["mask"]
    return out


def oracle(w0: torch.Tensor, ranks: list, loss_type: str, scale: str = "group", on_policy: bool = False,
           quantile: float = 1.0, generation: list = None, off_policy_threshold: float = None):
    """The step's loss and gradient. ``ranks[r][i]`` is rank r's micro-batch i. grpo, dr_grpo and
    dapo: one process whose micro-batch i is every rank's micro-batch i; bnpo: TRL's per-rank
    token mean, averaged over the ranks (as DDP averages them). ``generation``: every micro-batch
    of the generation batch when it is larger than the step (steps_per_generation): TRL's
    ``num_items_in_batch`` and batch std are over it."""
    if quantile < 1.0:
        masks = trl_entropy_masks(w0, ranks, quantile)
        ranks = [[{**mb, "entropy_mask": masks[r][i]} for i, mb in enumerate(rank)] for r, rank in enumerate(ranks)]
    accumulation = len(ranks[0])
    every = generation if generation is not None else [mb for rank in ranks for mb in rank]
    num_items = float(sum(int(mb["mask"].sum()) for mb in every))
    batch_std = torch.cat([mb["rewards"][:, 0] for mb in every]).std() if scale == "batch" else None
    w = w0.clone().requires_grad_(True)
    if loss_type == "bnpo":
        groups = [[(mb,) for mb in rank] for rank in ranks]
    else:
        groups = [[tuple(rank[i] for rank in ranks) for i in range(accumulation)]]
    total = 0.0
    for rank in groups:
        for parts in rank:
            mb = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            if off_policy_threshold is not None:
                mb["off_policy_threshold"] = off_policy_threshold
            std = None if batch_std is None else batch_std.expand(mb["rewards"].shape[0])
            per_token = trl_per_token_loss(w, mb, group_adv(mb["rewards"][:, 0], std), loss_type, on_policy,
                                           *setting(loss_type))
            total = total + trl_micro_loss(per_token, mb["mask"], loss_type, accumulation, num_items, 1)
    total = total / len(groups)
    total.backward()
    return total.detach(), w.grad


def config(loss_type: str, quantile: float = 1.0, off_policy_threshold: float = None) -> GRPOConfig:
    level, beta = setting(loss_type)
    return GRPOConfig(loss_type=loss_type, beta=beta, epsilon=EPS,
                      epsilon_high=CISPO_CAP if loss_type == "cispo" else EPS, temperature=TEMPERATURE,
                      importance_sampling_level=level, max_completion_length=L, top_entropy_quantile=quantile,
                      off_policy_mask_threshold=off_policy_threshold)


def ours(w0: torch.Tensor, local: list, loss_type: str, dist: Dist, scale: str = "group", on_policy: bool = False,
         quantile: float = 1.0, train: slice = slice(None), off_policy_threshold: float = None):
    """What GRPOTrainer.train_step does with this rank's micro-batches: normalise_step once, then
    every micro-batch's ``micro_batch_loss`` times its weight over the accumulation divisor; the
    gradient averaged over the ranks as DDP does."""
    rollouts = [SimpleNamespace(ghost=False, mask=mb["mask"], loss_tokens=mb["mask"], rewards=mb["rewards"], weight=1.0,
                                num_items=None, advantages=group_adv(mb["rewards"][:, 0]), completion_ids=mb["ids"],
                                old_logp=None if on_policy else mb["old"], ref_logp=mb["ref"]) for mb in local]
    normalise_step(rollouts, loss_type=loss_type, scale_rewards=scale, group_size=G, reward_weights=[1.0], dist=dist)
    local, rollouts = local[train], rollouts[train]  # the step's micro-batches of the generation batch
    divisor = accumulation_divisor(loss_type, len(rollouts))
    cfg = config(loss_type, quantile, off_policy_threshold)
    w = w0.clone().requires_grad_(True)
    reported = 0.0
    for mb, r in zip(local, rollouts):
        loss, _ = micro_batch_loss(mb["feats"] @ w, r, cfg, dist, entropy=False)
        (loss * r.weight / divisor).backward()
        reported += float(loss.detach()) * r.weight / dist.world_size / divisor
    grad = w.grad
    if dist.enabled:
        import torch.distributed as tdist

        tdist.all_reduce(grad)
        grad = grad / dist.world_size
        reported = dist.sum([reported])[0]
    return reported, grad


def weights() -> torch.Tensor:
    return torch.randn(D, V, generator=torch.Generator().manual_seed(99), dtype=torch.float64)


@pytest.mark.parametrize("on_policy", [True, False])
@pytest.mark.parametrize("accumulation", [1, 2, 4])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_one_process_step_equals_trl_on_the_generation_batch(loss_type, accumulation, on_policy):
    local = [micro_batch(seed, prompts=2) for seed in range(accumulation)]
    expected_loss, expected_grad = oracle(weights(), [local], loss_type, on_policy=on_policy)
    loss, grad = ours(weights(), local, loss_type, Dist(), on_policy=on_policy)
    assert loss == pytest.approx(float(expected_loss), rel=1e-9, abs=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("quantile", [0.5, 0.0])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "cispo", "sapo", "vespo"])
def test_top_entropy_quantile_equals_trl(loss_type, quantile):
    """TRL's top_entropy_quantile: the policy term of the tokens below the micro-batch's entropy
    quantile is dropped; the KL term and the normalisers keep them (0.0: only the top token)."""
    local = [micro_batch(seed, prompts=2) for seed in range(2)]
    expected_loss, expected_grad = oracle(weights(), [local], loss_type, quantile=quantile)
    loss, grad = ours(weights(), local, loss_type, Dist(), quantile=quantile)
    assert loss == pytest.approx(float(expected_loss), rel=1e-9, abs=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)
    _, unmasked = oracle(weights(), [local], loss_type)
    assert not torch.allclose(grad, unmasked), "the entropy mask must change the gradient"


@pytest.mark.parametrize("scale", ["group", "batch"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_a_generation_batch_of_two_steps_equals_trl(loss_type, scale):
    """steps_per_generation 4, accumulation 2: one generation batch of 4 micro-batches serves 2
    optimizer steps; each step is TRL's loss on its 2 micro-batches, with num_items_in_batch and
    the batch std of all 4."""
    generation = [micro_batch(seed, prompts=2 if seed % 2 else 1) for seed in range(4)]
    for start in (0, 2):
        part = slice(start, start + 2)
        expected_loss, expected_grad = oracle(weights(), [generation[part]], loss_type, scale, generation=generation)
        loss, grad = ours(weights(), generation, loss_type, Dist(), scale, train=part)
        tol = 1e-9 if scale == "group" else 1e-6  # batch-scaled advantages are computed in float32
        assert loss == pytest.approx(float(expected_loss), rel=tol, abs=1e-12)
        torch.testing.assert_close(grad, expected_grad, rtol=tol, atol=tol * float(expected_grad.abs().max()))


@pytest.mark.parametrize("quantile", [1.0, 0.5])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "cispo", "sapo", "vespo"])
def test_off_policy_mask_threshold_equals_trl(loss_type, quantile):
    """TRL's off-policy sequence mask: sequences with A < 0 whose mean old - current log-ratio
    exceeds the threshold leave the policy term (with the entropy mask too, when both are on)."""
    local = [micro_batch(seed, prompts=2) for seed in range(2)]
    expected_loss, expected_grad = oracle(weights(), [local], loss_type, quantile=quantile, off_policy_threshold=0.0)
    loss, grad = ours(weights(), local, loss_type, Dist(), quantile=quantile, off_policy_threshold=0.0)
    assert loss == pytest.approx(float(expected_loss), rel=1e-9, abs=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)
    _, unmasked = oracle(weights(), [local], loss_type, quantile=quantile)
    assert not torch.allclose(grad, unmasked), "the mask must drop a sequence"
    _, on_policy = ours(weights(), local, loss_type, Dist(), quantile=quantile, off_policy_threshold=0.0,
                        on_policy=True)
    _, on_policy_unmasked = ours(weights(), local, loss_type, Dist(), quantile=quantile, on_policy=True)
    torch.testing.assert_close(on_policy, on_policy_unmasked, rtol=0, atol=0)  # on-policy: nothing dropped


def test_dapo_is_one_token_mean_per_step_not_a_mean_of_micro_batch_means():
    """The issue's example: micro-batches of very different token counts weigh by their tokens."""
    short, long = micro_batch(0, prompts=1), micro_batch(1, prompts=3)
    short["mask"][:, 2:] = False
    _, grad = ours(weights(), [short, long], "dapo", Dist())
    _, per_micro_mean = oracle(weights(), [[short]], "dapo")
    assert not torch.allclose(grad, per_micro_mean / 2)  # the short micro-batch alone no longer counts half
    _, expected = oracle(weights(), [[short, long]], "dapo")
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)


def test_batch_scaled_advantages_use_every_micro_batch():
    local = [micro_batch(seed, prompts=2) for seed in range(3)]
    rollouts = [SimpleNamespace(ghost=False, mask=mb["mask"], loss_tokens=mb["mask"], rewards=mb["rewards"], weight=1.0,
                                num_items=None,
                                advantages=torch.zeros(mb["rewards"].shape[0])) for mb in local]
    normalise_step(rollouts, loss_type="grpo", scale_rewards="batch", group_size=G, reward_weights=[1.0], dist=Dist())
    std = torch.cat([mb["rewards"][:, 0] for mb in local]).std()
    for mb, r in zip(local, rollouts):
        expected = group_adv(mb["rewards"][:, 0], std.expand(mb["rewards"].shape[0]))
        torch.testing.assert_close(r.advantages.double(), expected, rtol=1e-5, atol=1e-5)


def two_function_rewards(seed: int, prompts: int) -> torch.Tensor:
    """(prompts * G, 2) rewards with NaN (not scored): a completion no function scores, and a
    group where the second function scores one completion only."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 4, (prompts * G, 2), generator=g).double()
    r[0, :] = float("nan")
    if prompts > 1:
        r[G:2 * G, 1] = float("nan")
        r[G, 1] = 1.0
    return r


def trl_nanstd(x: torch.Tensor, dim=None, keepdim=False) -> torch.Tensor:
    """TRL's nanstd: nanmean of squared deviations with Bessel's correction, NaN below 2 values."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    variance = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(x), dim=dim, keepdim=True)
    variance = variance * torch.where(count > 1, count / (count - 1), torch.full_like(count / 1.0, float("nan")))
    std = torch.sqrt(variance)
    return std if keepdim else std.squeeze()


def trl_normalize_then_sum(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """TRL's _generate_and_score_completions with multi_objective_aggregation normalize_then_sum."""
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    grouped = rewards_per_func.view(-1, G, rewards_per_func.shape[1])
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = trl_nanstd(grouped, dim=1, keepdim=True)
    reward_k = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, rewards_per_func.shape[1])
    rewards = (reward_k * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    advantages = (rewards - torch.nanmean(rewards)) / (trl_nanstd(rewards) + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def _normalise_then_sum_here(tables: list, dist: Dist) -> list:
    rollouts = [SimpleNamespace(ghost=False, mask=torch.ones(t.shape[0], 2, dtype=torch.bool),
                                loss_tokens=torch.ones(t.shape[0], 2, dtype=torch.bool), rewards=t, weight=1.0,
                                num_items=None, advantages=torch.zeros(t.shape[0], dtype=torch.float64))
                for t in tables]
    normalise_step(rollouts, loss_type="grpo", scale_rewards="group", group_size=G, reward_weights=[1.0, 0.5],
                   dist=dist, aggregation="normalize_then_sum")
    return [r.advantages for r in rollouts]


def test_normalize_then_sum_equals_trl_on_the_generation_batch():
    tables = [two_function_rewards(seed, prompts=3) for seed in range(3)]
    got = torch.cat(_normalise_then_sum_here(tables, Dist()))
    want = trl_normalize_then_sum(torch.cat(tables), torch.tensor([1.0, 0.5], dtype=torch.float64))
    # TRL's nanstd forms its Bessel factor count / (count - 1) in float32: 1e-7 relative
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)
    assert got[0] == 0.0 and got.abs().max() > 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# rank r's micro-batches: equal shares in the first micro-batch, the remainder (1 prompt vs 2) in
# the second, as the last global batch of an epoch is split
_SHARES = [[2, 2], [2, 1]]


def _rank_tables(rank: int) -> list:
    return [two_function_rewards(10 * rank + i, prompts=p) for i, p in enumerate(_SHARES[rank])]


def _rank_batches(rank: int) -> list:
    return [micro_batch(10 * rank + i, prompts=p) for i, p in enumerate(_SHARES[rank])]


def _two_rank_worker(rank: int, port: int, queue) -> None:
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        dist = Dist(rank=rank, world_size=2)
        results = {}
        for loss_type in LOSS_TYPES:
            for scale in ("group", "batch"):
                results[loss_type, scale, 1.0] = ours(weights(), _rank_batches(rank), loss_type, dist, scale)
        results["normalize_then_sum"] = (0.0, torch.cat(_normalise_then_sum_here(_rank_tables(rank), dist)))
        for loss_type in ("grpo", "dapo", "sapo"):  # the entropy threshold over both ranks' tokens
            results[loss_type, "group", 0.5] = ours(weights(), _rank_batches(rank), loss_type, dist, "group",
                                                    quantile=0.5)
        # numpy, not tensors: a tensor in a queue is shared memory that dies with this process
        queue.put((rank, {k: (loss, grad.numpy()) for k, (loss, grad) in results.items()}))
    finally:
        tdist.destroy_process_group()


def test_two_gloo_ranks_equal_trl_on_the_whole_generation_batch():
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_two_rank_worker, args=(r, port, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    ranks = [_rank_batches(0), _rank_batches(1)]
    for rank in (0, 1):  # normalize_then_sum: TRL's statistics over both ranks' generation batch
        everything = torch.cat([t for r in (0, 1) for t in _rank_tables(r)])
        want = trl_normalize_then_sum(everything, torch.tensor([1.0, 0.5], dtype=torch.float64))
        start = sum(t.shape[0] for t in _rank_tables(0)) if rank else 0
        got = torch.from_numpy(results[rank].pop("normalize_then_sum")[1])
        torch.testing.assert_close(got, want[start:start + got.shape[0]], rtol=1e-6, atol=1e-9)
    for (loss_type, scale, quantile), (loss, grad) in results[0].items():
        grad = torch.from_numpy(grad)
        expected_loss, expected_grad = oracle(weights(), ranks, loss_type, scale, quantile=quantile)
        tol = 1e-9 if scale == "group" else 1e-6  # batch-scaled advantages are computed in float32
        assert loss == pytest.approx(float(expected_loss), rel=tol, abs=1e-12), (loss_type, scale)
        torch.testing.assert_close(grad, expected_grad, rtol=tol, atol=tol * 1e-3, msg=f"{loss_type} {scale}")
        assert results[1][loss_type, scale, quantile][0] == pytest.approx(loss, rel=1e-12)
