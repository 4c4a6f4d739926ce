"""TRL's GRPO metrics: entropy (against an fp64 categorical entropy), clip_ratio/low_min and
clip_ratio/high_max (against TRL's per-sequence formula), num_tokens (cumulative, every generated
prompt and completion token)."""

from __future__ import annotations

import math

import pytest
import torch

from r1omni_fast.train.metrics_log import read_jsonl

from _train_fixtures import clip_loader, grpo_fields, shared_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_entropy_matches_the_categorical_entropy(monkeypatch, dtype, temperature):
    from r1omni_fast.kernels import reference, token_entropy

    monkeypatch.setattr(reference, "VOCAB_CHUNK", 48)  # several vocabulary chunks, the last one short
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 200, generator=g) * 4).to(dtype)
    want = torch.distributions.Categorical(logits=logits.double() / temperature).entropy()
    got = token_entropy(logits, temperature)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.allclose(got.double(), want, atol=1e-5 if dtype != torch.float64 else 1e-12)
    with pytest.raises(ValueError, match="temperature"):
        token_entropy(logits, 0.0)


def _trl_extremes(logp, old, adv, mask, eps_low, eps_high, level):
    """TRL's formulas, written out: coef_1 from the (masked-mean) log ratio, flags, masked_seq_mean,
    nanmin / nanmax."""
    log_ratio = (logp - old) * mask
    if level == "sequence":
        log_ratio = (log_ratio.sum(-1) / mask.sum(-1).clamp(min=1.0))[:, None]
    coef_1 = torch.exp(log_ratio)
    a = adv[:, None]
    low = ((coef_1 < 1 - eps_low) & (a < 0)).double()
    high = ((coef_1 > 1 + eps_high) & (a > 0)).double()

    def seq_mean(x):
        return x.squeeze(1) if x.shape[1] == 1 else (x * mask).sum(-1) / mask.sum(-1)

    lows, highs = seq_mean(low), seq_mean(high)
    lows, highs = lows[~torch.isnan(lows)], highs[~torch.isnan(highs)]
    return (float(lows.min()) if lows.numel() else math.nan, float(highs.max()) if highs.numel() else math.nan)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("seed", range(4))
def test_clip_extremes_follow_trls_per_sequence_formula(level, seed):
    from r1omni_fast.train.grpo.loss import sequence_clip_extremes

    g = torch.Generator().manual_seed(seed)
    logp = torch.randn(6, 7, generator=g, dtype=torch.float64) - 2
    old = logp + 1.0 * torch.randn(6, 7, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0])
    lengths = torch.tensor([7, 3, 0, 5, 1, 7])  # a row without loss tokens
    mask = (torch.arange(7)[None] < lengths[:, None]).double()
    got = sequence_clip_extremes(logp, old, adv, mask, 0.2, 0.28, level)
    want = _trl_extremes(logp, old, adv.double(), mask, 0.2, 0.28, level)
    assert got == pytest.approx(want, nan_ok=True)
    assert 0 < want[1]  # high clipping happens in these draws (the oracle is not trivially 0)
    # on-policy (no old log-probs): ratio 1, nothing clipped
    assert sequence_clip_extremes(logp, None, adv, mask, 0.2, 0.28, level) == (0.0, 0.0)
    # no loss token anywhere: NaN (token level), as TRL's nanmin of an all-NaN tensor
    if level == "token":
        assert all(math.isnan(v) for v in sequence_clip_extremes(logp, old, adv, mask * 0, 0.2, 0.28, level))


def test_entropy_and_num_tokens_in_a_run(assets, tmp_path):
    from r1omni_fast.config import GRPOConfig
    from r1omni_fast.train.grpo import GRPOTrainer

    model_dir, data = assets
    fields = grpo_fields(model_dir, data, tmp_path / "run", max_steps=2, num_iterations=2, temperature=0.8)
    fields.pop("stage")
    trainer = GRPOTrainer(GRPOConfig(**fields), loader=clip_loader(), progress=False)
    trainer.train()
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert all(0.0 < r["entropy"] <= math.log(trainer.model.llm.config.vocab_size) for r in records)
    for key in ("clip_ratio/low_min", "clip_ratio/high_max"):
        assert all(r[key] is None or 0.0 <= r[key] <= 1.0 for r in records)
    # num_tokens: every prompt token (each prompt sampled G times) and completion token generated so
    # far; step 2 reuses step 1's completions (num_iterations 2), so it adds nothing
    rows = read_jsonl(tmp_path / "run" / "completions.jsonl")
    assert {r["step"] for r in rows} == {1}
    samples = {s.id: s for s in trainer.train_data.samples}
    batch = trainer.collate([samples[r["prompt_id"]] for r in rows[::trainer.cfg.num_generations]])
    prompt_tokens = int(trainer.prompt_inputs(batch)["attention_mask"].sum()) * trainer.cfg.num_generations
    completion_tokens = records[0]["completions/mean_length"] * len(rows)
    assert records[0]["num_tokens"] == pytest.approx(prompt_tokens + completion_tokens)
    assert records[1]["num_tokens"] == records[0]["num_tokens"]
    # the entropy of step 2 is the policy's mean token entropy over the completions (fp64 oracle)
    rollout = trainer.rollouts[0]
    with torch.no_grad():
        logits = trainer.model.completion_logits(rollout.prompts, rollout.completion_ids, rollout.mask,
                                                 trainer.cfg.num_generations)
    ent = torch.distributions.Categorical(logits=logits.double() / 0.8).entropy()
    m = rollout.mask.double()
    _, metrics = trainer.policy_loss(rollout)
    assert float(metrics["entropy"]) == pytest.approx(float((ent * m).sum() / m.sum()), rel=1e-5)
